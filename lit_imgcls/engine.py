"""Turns a Recipe into a network, an ImageClassifier, a DataModule and a Lightning Trainer, and runs them."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import logging
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

from lit_imgcls import __version__
from lit_imgcls.checkpoints import (check_fresh_prefix, epoch_of, epoch_path, existing_epochs, newest_readable,
                                   prefix_held, resume_path)
from lit_imgcls.data.balance import check_sampler, resolve_class_weights
from lit_imgcls.data.checks import check_batch_norm, check_classes, check_described_data, check_training_samples
from lit_imgcls.errors import NonFiniteLoss, RemoteUnavailable, RunFailed, RunStopped, UsageError
from lit_imgcls.ranks import is_global_zero
from lit_imgcls.recipe import Recipe, dataset_keys, train_resolution, validate
from lit_imgcls.resume_changes import OTHER_NETWORK_HINT, check_resumable
from lit_imgcls.registry import datasets, strategies
from lit_imgcls.schedules import parse_epochs


@dataclass
class RunResult:
    """What a run reports back: metrics, time, where things went."""

    metrics: dict[str, float]
    train_seconds: float
    wall_seconds: float
    samples_per_sec: float
    checkpoint: str | None
    run_dir: str | None
    reports: bool = True  # False on the workers of a synchronous run other than rank 0, which reports for all
    first_epoch: int = 0  # the epoch this run started in (0-based; after a resume, the one it continued)
    epochs_done: int = 0  # epochs finished when it ended (counted from the first run's start)
    num_epochs: int = 0  # epochs the recipe asked for
    steps: int = 0  # optimizer steps this run took
    nothing_to_train: str | None = None  # set when --resume auto found the run already finished: why


@dataclass
class DataSpec:
    """What a network is built for: the classes (output order) and the evaluation preprocessing (input shape,
    mean/std). A DataModule gives it for training; a checkpoint's meta gives it back for prediction."""

    class_names: list[str]
    data_config: Any  # lit_imgcls.data.preprocess.DataConfig

    @classmethod
    def of(cls, datamodule) -> "DataSpec":
        """A DataModule's; one that states no ``data_config`` (a plain LightningDataModule with ``class_names``,
        ``image_shape``, ``mean``, ``std``) gets the base class's: its images whole, at ``image_shape``."""
        from lit_imgcls.data.base import ImageDataModule

        config = getattr(datamodule, "data_config", None) or ImageDataModule.data_config.fget(datamodule)
        return cls([str(n) for n in datamodule.class_names], config)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_datamodule(recipe: Recipe):
    """The registered DataModule for ``recipe.dataset``, configured from the recipe; it must deliver the recipe's
    ``image_shape`` when one is given (every built-in one does).

    Raises:
        UsageError: a plugin DataModule that delivers another shape than ``image_shape`` asks for.
    """
    cls = datasets.get(recipe.dataset)
    if getattr(recipe, "augment_device", False):
        # The per-image stages run in the training step (_device_augment): the loaders get the batch stages only,
        # a list all the same, so that the dataset's own augmentation stays off as the recipe's list says.
        from lit_imgcls.data.augment import split_levels

        recipe = copy.copy(recipe)
        recipe.augment = split_levels(recipe.augment)[1]
    dm = cls.from_recipe(recipe) if hasattr(cls, "from_recipe") else cls(recipe)
    if getattr(recipe, "augment_device", False) and hasattr(dm, "augment_on_device"):
        dm.augment_on_device = True  # uint8 training images at the input size, without the format's own augmentation
    if recipe.image_shape:
        want = tuple(int(v) for v in recipe.image_shape.split(","))
        if tuple(int(v) for v in dm.image_shape) != want:
            have = ",".join(str(v) for v in dm.image_shape)
            raise UsageError(f"dataset {recipe.dataset} delivers images of shape {have}, not image_shape "
                             f"{recipe.image_shape}: leave image_shape unset, or use a dataset that honours it")
    _apply_rgb(recipe, dm)
    return dm


def _apply_rgb(recipe: Recipe, dm) -> None:
    """The recipe's ``rgb_mean``/``rgb_std`` (MXNet's 0-255 scale) replace the DataModule's statistics.

    Raises:
        UsageError: a value count other than 1 or the image channels; a DataModule without ``set_normalization``.
    """
    from lit_imgcls.data.preprocess import per_channel
    from lit_imgcls.recipe import parse_rgb

    stats = {key: parse_rgb(getattr(recipe, key), key) for key in ("rgb_mean", "rgb_std")}
    if all(v is None for v in stats.values()):
        return
    if not hasattr(dm, "set_normalization"):
        raise UsageError(f"dataset {recipe.dataset} cannot take rgb_mean or rgb_std (its DataModule has no "
                         "set_normalization()): leave them unset")
    c = int(dm.image_shape[0])
    for key, values in stats.items():
        if values is not None and len(values) not in (1, c):
            raise UsageError(f"{key} has {len(values)} values but the images of dataset {recipe.dataset} have {c} "
                             f"channel(s): give 1 value" + (f" or {c}" if c > 1 else ""))
    dm.set_normalization(*(per_channel(v, c) if v is not None else None for v in stats.values()))


def build_module(recipe: Recipe, spec: DataSpec, class_weights: list[float] | None = None):
    """The network from the registry, wrapped in an ImageClassifier with the recipe's optimisation settings.

    The network is built for ``spec`` (class count, input channels and size); its meta (saved in every
    checkpoint) holds the recipe, the class names, the evaluation preprocessing and ``class_weights`` (the loss's
    weights per class, resolved from the recipe's ``class_weights`` by :func:`lit_imgcls.data.balance.
    resolve_class_weights`), so that a resume compares them as data.
    """
    import torch

    from lit_imgcls.module import ImageClassifier
    from lit_imgcls.networks.factory import create_network
    from lit_imgcls.training_options import EvalConfig, OptimConfig

    config = spec.data_config
    c, h, w = config.input_size
    if recipe.tta_flip and w < 2:
        raise UsageError(f"tta_flip mirrors images left to right, but dataset {recipe.dataset}'s are {w} pixel wide: "
                         "leave tta_flip false")
    if recipe.top_k > spec.num_classes:
        raise UsageError(f"top_k {recipe.top_k} exceeds the {spec.num_classes} classes of dataset {recipe.dataset}; use --top-k 0 (off) or at most {spec.num_classes}")
    net = create_network(
        recipe.network, num_classes=spec.num_classes, in_chans=c, img_size=h if h == w else (h, w),
        num_layers=recipe.num_layers,
    )
    loaded = None
    if recipe.pretrained:
        from lightning.pytorch.utilities import rank_zero_info

        from lit_imgcls.networks.factory import load_pretrained, resolve_name

        loaded = load_pretrained(net, recipe.pretrained, spec.class_names, resolve_name(recipe.network, recipe.num_layers))
        rank_zero_info(f"pretrained: {loaded.summary()}")
    if recipe.freeze_backbone or recipe.backbone_lr_mult != 1:
        _check_head(net, recipe)
    if recipe.freeze_backbone:
        head = {id(p) for p in net.get_classifier().parameters()}
        for p in net.parameters():
            p.requires_grad_(id(p) in head)
    if recipe.channels_last:
        net = net.to(memory_format=torch.channels_last)
    module = ImageClassifier(
        net,
        num_classes=spec.num_classes,
        optimizer=recipe.optimizer,
        lr=recipe.lr,
        momentum=recipe.mom,
        nesterov=recipe.nesterov,
        weight_decay=recipe.wd,
        lr_schedule=recipe.schedule(),
        lr_factor=recipe.lr_factor,
        lr_factor_epoch=recipe.lr_factor_epoch,
        lr_step_epochs=parse_epochs(recipe.lr_step_epochs),
        warmup_epochs=recipe.warmup_epochs,
        onecycle_pct=recipe.onecycle_pct,
        label_smoothing=recipe.label_smoothing,
        class_weights=class_weights,
        backbone_lr_mult=recipe.backbone_lr_mult,
        top_k=recipe.top_k,
        class_names=list(spec.class_names),
        mean=list(config.mean),
        std=list(config.std),
        optim=OptimConfig.from_recipe(recipe),
        evaluation=EvalConfig.from_recipe(recipe),
        batch_augment=_batch_augment(recipe, spec),
        device_augment=_device_augment(recipe, spec),
        train_resolution=train_resolution(recipe, (h, w)),
    )
    # One image of the input the network is built for: with it Lightning's model summary at the start of fit
    # counts the network's real FLOPs and shows its input and output sizes (without it, a column of zeros and
    # "Total FLOPs: 0"). The summary runs it once, in eval mode, without gradients.
    module.example_input_array = torch.zeros(1, c, h, w)
    module.meta = {
        "version": __version__,
        "recipe": dataclasses.asdict(recipe),
        "class_names": list(spec.class_names),
        "image_shape": [c, h, w],
        "mean": list(config.mean),
        "std": list(config.std),
        "data_config": config.to_dict(),
    }
    if class_weights is not None:
        module.meta["class_weights"] = {"source": recipe.class_weights, "weights": list(class_weights)}
    if loaded is not None:
        module.meta["pretrained"] = {"path": loaded.path, "loaded": len(loaded.loaded), "skipped": loaded.skipped,
                                     "new": loaded.new}
    return module


def _batch_augment(recipe: Recipe, spec: DataSpec):
    """The recipe's batch stages (mixup, cutmix) for the module's training step, or None."""
    from lit_imgcls.data.augment import BatchMix, StageContext, split_levels

    batch = split_levels(getattr(recipe, "augment", None))[1]
    if not batch:
        return None
    return BatchMix(batch, StageContext(tuple(spec.data_config.input_size), spec.num_classes), recipe.seed)


def _device_augment(recipe: Recipe, spec: DataSpec):
    """With ``augment_device``, the recipe's per-image stages for the module's training step, else None."""
    from lit_imgcls.data.augment import DeviceAugment, StageContext, split_levels

    if not getattr(recipe, "augment_device", False):
        return None
    sample = split_levels(getattr(recipe, "augment", None))[0]
    return DeviceAugment(sample, StageContext(tuple(spec.data_config.input_size), spec.num_classes), recipe.seed)


def _check_head(net, recipe: Recipe) -> None:
    import torch

    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
        raise UsageError(
            f"network {recipe.network} has no classifier layer to tell from its backbone (get_classifier()); "
            "freeze_backbone and backbone_lr_mult need one"
        )


def devices(recipe: Recipe) -> tuple[str, Any, int]:
    """The recipe's Lightning accelerator, its ``devices`` argument and the device count on this machine.

    Raises:
        UsageError: ``gpus`` names CUDA devices this machine does not have.
    """
    ids = recipe.gpu_ids()
    if not ids:
        # torchrun --nproc-per-node K starts K CPU processes per machine itself (LOCAL_WORLD_SIZE=K).
        n = recipe.num_processes if recipe.num_processes > 1 else int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        return "cpu", n, n
    import torch

    available = torch.cuda.device_count()
    missing = [i for i in ids if i >= available]
    if missing:
        raise UsageError(
            f"gpus {recipe.gpus!r} asks for CUDA device(s) {missing}, but this machine has {available}; "
            "use --gpus '' to train on the CPU"
        )
    return "gpu", ids, len(ids)


def num_nodes(devices_per_node: int) -> int:
    """Worker machines of this run, read from the environment of whoever started the processes.

    ``lit-imgcls launch`` and hand-started workers set WORLD_SIZE (processes in all); torchrun also sets
    LOCAL_WORLD_SIZE (processes per machine); SLURM sets SLURM_NNODES. Lightning needs the machine count up
    front and checks it against these variables.
    """
    if "SLURM_NNODES" in os.environ and "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_NNODES"])
    world = int(os.environ.get("WORLD_SIZE", "0") or 0)
    if world <= 0:
        return 1
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or devices_per_node
    if world % per_node:
        raise UsageError(
            f"WORLD_SIZE={world} processes cannot be split into machines of {per_node} device(s) each; "
            "start one process per device on every machine"
        )
    return world // per_node


def build_trainer(recipe: Recipe, callbacks: list, logger: Any = None, **overrides):
    """A Lightning Trainer with the recipe's devices, kv-store strategy, precision and epochs."""
    import lightning as L

    from lit_imgcls.callbacks.progress import progress_bar_for
    from lit_imgcls.io import AtomicCheckpointIO

    accelerator, device_arg, count = devices(recipe)
    nodes = num_nodes(count)
    strategy = strategies.get(recipe.kv_store)(count, accelerator, num_nodes=nodes, timeout=recipe.dist_timeout)
    bar = progress_bar_for(recipe)  # a bar on a terminal, plain lines in a log, none with progress_bar: false
    if bar is not None:
        callbacks = [*callbacks, bar]
    kwargs = dict(
        accelerator=accelerator,
        devices=device_arg,
        num_nodes=nodes,
        strategy=strategy,
        precision=recipe.precision,
        max_epochs=recipe.num_epochs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_checkpointing=False,  # EpochCheckpoint writes MXNet-style per-epoch files instead
        enable_progress_bar=recipe.progress_bar,
        enable_model_summary=recipe.progress_bar,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our loaders shard by rank themselves, with equal batches per rank
        log_every_n_steps=recipe.disp_batches,
        plugins=[AtomicCheckpointIO()],
    )
    kwargs.update(overrides)
    if kwargs["enable_model_summary"]:
        from lightning.pytorch.callbacks import ModelSummary

        # The plain-text summary, not the Rich table Lightning picks when rich is installed: Rich draws at 80
        # columns anywhere but a terminal, wrapping the input and output sizes over several lines of a log.
        kwargs["callbacks"] = [*kwargs["callbacks"], ModelSummary(max_depth=1)]
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, ImportError) as exc:
        # The Trainer checks its settings together (a strategy, a precision or devices this machine cannot run);
        # its refusal is about the recipe's keys, so it is their one line, without Lightning's traceback.
        raise UsageError(f"these settings cannot run here (kv_store {recipe.kv_store}, precision {recipe.precision}, "
                         f"gpus {recipe.gpus or 'none: CPU'}): {_first_line(exc)}") from None


class _DropNotices(logging.Filter):
    """Lightning's info lines that concern Lightning itself, not the user's run."""

    NOTICES = (
        "Tip:",  # an advertisement of cloud services at every start
        # said at every fit: the LR schedule asks for the epoch's length, which needs the loader built early
        "to estimate number of stepping batches",
        # this machine has no TPU; that Lightning could use one is no news about the run
        "TPU available: False",
        # build_trainer hands Lightning the plain-text ModelSummary itself; Lightning says it therefore adds none
        "Skipping setting a default `ModelSummary`",
        # "`Trainer.fit` stopped: `max_epochs=1` reached.": the final: line says which epochs the run trained
        "` stopped: `max_epochs=",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(notice in str(record.msg) for notice in self.NOTICES)


def prepare_process(recipe: Recipe) -> None:
    import lightning as L
    import torch

    # Notices Lightning prints on every run that concern its own internals, not the user's run.
    warnings.filterwarnings("ignore", message=".*overridden `(transfer_batch_to_device|on_after_batch_transfer)`.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)`? is deprecated.*")
    # log_every_n_steps is disp_batches; an epoch shorter than that still gets its Speedometer line and metrics.csv
    # row at the epoch's end, so Lightning's advice to lower the interval is wrong for this trainer.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning fears that a sized IterableDataset's length is wrong with several workers; the pack loaders deal
    # shards to each (rank, worker) slot with an exact quota (data/formats/wds.py), so their length is exact.
    warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
    # A pack without a val or test split has no validation loader: an empty list, on purpose (PackedDataModule).
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero.*")
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNotices) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropNotices())
    if recipe.threads:
        # Lightning's process launcher resets torch's thread count from OMP_NUM_THREADS when it is set, and to
        # cores // processes when it is not; the recipe's choice must win.
        os.environ["OMP_NUM_THREADS"] = str(recipe.threads)
    threads = recipe.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1
    torch.set_num_threads(threads)
    L.seed_everything(recipe.seed, workers=True, verbose=False)


def data_where(recipe: Recipe, train: bool = False) -> str:
    """The training (``train``) or evaluation data of a recipe in words, for messages: ``dataset folder (data/train)``."""
    location = (recipe.data_train if train else recipe.data_val or recipe.data_train) or recipe.data_dir
    return f"dataset {recipe.dataset}" + (f" ({location})" if location else "")


def match_checkpoint(datamodule, meta, checkpoint: str, where: str) -> None:
    """Evaluation data fit for a checkpoint: the same classes in the same order (else one line naming the
    difference), and the checkpoint's evaluation preprocessing (applied when the DataModule can, else a warning
    naming both).

    Raises:
        UsageError: other classes than the checkpoint's.
    """
    from lit_imgcls.data.classes import check_same_classes

    check_same_classes(datamodule.class_names, meta.class_names, where, f"checkpoint {checkpoint}")
    use = getattr(datamodule, "use_eval_config", None)
    own = getattr(datamodule, "data_config", None)
    if meta.data_config is None:  # a checkpoint from before lit-imgcls 0.2 saved its preprocessing
        return
    if own is not None and own != meta.data_config and not (use is not None and use(meta.data_config)):
        from lit_imgcls.printable import warn

        warn(f"{where} prepares images as {own.describe()}, checkpoint {checkpoint} was validated with "
             f"{meta.data_config.describe()}: accuracy here may differ from the run's")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def run_name(recipe: Recipe, datamodule=None) -> str:
    """The run folder's name under ``run_dir``: ``DATASET-NETWORK``, the data set as the DataModule names it (a
    pack's ``dataset_name``: the data set it was packed from, not ``wds``), else ``recipe.dataset``, and the
    network as it is built (``--network resnet --num-layers 18`` is ``resnet18``). Made safe for a folder name."""
    from lit_imgcls.networks.factory import network_key

    dataset = getattr(datamodule, "dataset_name", None) or recipe.dataset
    name = f"{dataset}-{network_key(recipe.network, recipe.num_layers)}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:120]


def _logger(recipe: Recipe, datamodule=None):
    """CSV metrics always (``lit-imgcls plot`` and the TUI read them) in ``run_dir/``:func:`run_name```; with
    ``tensorboard`` TensorBoard too, first logger CSV, so ``trainer.log_dir`` stays the CSV run folder."""
    from lightning.pytorch.loggers import CSVLogger

    name = run_name(recipe, datamodule)
    csv = CSVLogger(save_dir=recipe.run_dir, name=name)
    if not recipe.tensorboard:
        return csv
    try:
        import tensorboard  # noqa: F401  (Lightning falls back to tensorboardX silently; name the real need)
        from lightning.pytorch.loggers import TensorBoardLogger
    except ImportError:
        raise UsageError("tensorboard: true needs the tensorboard package: pip install 'lit-imgcls[tensorboard]'") from None
    # The same version number: TensorBoard's own count would pick the next folder, as CSV's already exists.
    return [csv, TensorBoardLogger(save_dir=recipe.run_dir, name=name, version=csv.version, default_hp_metric=False)]


class _RunCallbacks:
    """The callbacks of a training run, and the translation of what stops it into lit-imgcls's errors."""

    def __init__(self, recipe: Recipe, allow_any_class: bool) -> None:
        from lit_imgcls.callbacks import EpochCheckpoint, RunRecord, Speedometer
        from lit_imgcls.callbacks.interrupt import GracefulInterrupt
        from lit_imgcls.callbacks.resume_state import ResumeState
        from lit_imgcls.callbacks.run_events import RunEvents
        from lit_imgcls.callbacks.step_units import StepUnits
        from lit_imgcls.callbacks.stop_checkpoint import StopCheckpoint
        from lit_imgcls.callbacks.watchdog import Watchdog

        self.speedometer = Speedometer(recipe.disp_batches)
        self.watchdog = Watchdog()
        self.saver = EpochCheckpoint(recipe.model_prefix, recipe.save_period, recipe.to_yaml()) if recipe.model_prefix else None
        # StepUnits first: it sets Lightning's logging step before any other callback's hook can log.
        callbacks: list = [StepUnits(recipe.disp_batches, recipe.save_every_steps), self.speedometer,
                           RunRecord(recipe.to_yaml()), self.watchdog, *recipe.build_callbacks(allow_any_class)]
        if self.saver:
            callbacks.append(self.saver)
        if recipe.save_every_steps:
            from lit_imgcls.callbacks.step_checkpoint import StepCheckpoint

            callbacks.append(StepCheckpoint(recipe.model_prefix or "", recipe.save_every_steps))
        self.stop = StopCheckpoint(recipe.model_prefix)
        self.events = RunEvents(recipe, self.speedometer, self.saver, self.stop)
        self.interrupt = GracefulInterrupt()
        # The stop checkpoint before the events (whose end event names it); events.jsonl in the run folder (lit-imgcls
        # tui reads it); Ctrl-C handling last, so a second Ctrl-C still quits while the stop checkpoint is written.
        self.callbacks = [*callbacks, ResumeState(), self.stop, self.events, self.interrupt]

    @contextlib.contextmanager
    def translated_errors(self, trainer, prefix: str | None):
        """What ends ``trainer.fit`` early, as the one-line errors of :mod:`lit_imgcls.errors`: a signal
        (:class:`RunStopped`), a full disk or a lost worker (:class:`RunFailed`), a diverged loss (:class:`NonFiniteLoss`,
        naming the newest good checkpoint under ``prefix``)."""
        try:
            yield
        except SystemExit as exc:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            if isinstance(exc, SIGTERMException):  # a cluster's pre-emption, the TUI's stop key, or Ctrl-C
                saved = self.stop.path or "none (see the run's events.jsonl)"
                sigint = self.interrupt.signal_name == "SIGINT"
                raise RunStopped(f"stopped by {'Ctrl-C (SIGINT)' if sigint else 'SIGTERM'} at step {trainer.global_step}; "
                                 f"checkpoint {saved}; rerun with --resume auto to continue",
                                 exit_code=128 + (signal.SIGINT if sigint else signal.SIGTERM)) from None
            raise
        except OSError as exc:
            from lit_imgcls.callbacks.saving import DISK_ERRORS, disk_failure

            if exc.errno in DISK_ERRORS:  # a log or metrics file on a disk that filled up during the run
                raise disk_failure(exc.filename or "the run's files", exc) from exc
            raise
        except NonFiniteLoss as exc:
            raise exc.with_checkpoint(newest_readable(prefix) if prefix else None) from None
        except RemoteUnavailable as exc:  # a shard or a checkpoint at a URL, still failing after the retries
            if "--resume auto" in str(exc):
                raise
            raise RemoteUnavailable(f"{exc}; the run stopped there and the checkpoints saved before are intact: rerun "
                                    "the same command with --resume auto once the storage answers") from None
        except Exception as exc:
            if self.watchdog.diagnosis:
                raise RunFailed(f"{self.watchdog.diagnosis} ({type(exc).__name__}: {_first_line(exc)})") from exc
            raise


def fit(recipe: Recipe, datamodule=None, allow_any_class: bool = False, overwrite: bool = False) -> RunResult:
    """Trains as the recipe says; ``datamodule`` replaces the recipe's dataset (e.g. an ArrayDataModule).

    Args:
        recipe: the run.
        datamodule: data to train on instead of the recipe's dataset.
        allow_any_class: callbacks may name any class path (see ``lit-imgcls fit --help``).
        overwrite: a run that starts from scratch may replace the checkpoints another run left under
            ``model_prefix`` (they are removed first); without it such a start is refused.

    Raises:
        UsageError: bad input (one line); :class:`~lit_imgcls.errors.NonFiniteLoss` when the loss diverges;
            :class:`~lit_imgcls.errors.RunFailed` when a worker or the disk fails;
            :class:`~lit_imgcls.errors.RunStopped` on SIGTERM or Ctrl-C.
    """
    validate(recipe, allow_any_class=allow_any_class)
    if datamodule is None:  # the sampler is fit's alone (score and validate may read a wds copy of ffcv's data)
        check_sampler(recipe.sampler, recipe.dataset, getattr(datasets.get(recipe.dataset), "draws_balanced", False))
    if overwrite and (recipe.resume or recipe.load_epoch is not None):
        raise UsageError("--overwrite starts a run from scratch, replacing the prefix's checkpoints; it cannot go "
                         "with --resume auto or --load-epoch, which continue from them")
    start = time.perf_counter()
    prepare_process(recipe)
    # A kv-store this machine cannot run (fsdp or deepspeed on the CPU) is refused before the data is loaded and
    # before model/ and runs/ are made: a refused run leaves nothing behind.
    accelerator, _, count = devices(recipe)
    strategies.get(recipe.kv_store)(count, accelerator, num_nodes=num_nodes(count), timeout=recipe.dist_timeout)
    check_accumulation(recipe, count * num_nodes(count))  # a flag conflict, before any data is read
    datamodule = datamodule if datamodule is not None else build_datamodule(recipe)
    where = data_where(recipe, train=True)
    check_classes(datamodule.class_names, where)
    if recipe.sampler != getattr(datamodule, "sampler", "shuffle"):  # a DataModule handed in, not built here
        check_sampler(recipe.sampler, type(datamodule).__name__, getattr(datamodule, "draws_balanced", False))
        datamodule.sampler = recipe.sampler
    counts = datamodule.training_class_counts() if hasattr(datamodule, "training_class_counts") else None
    reads = dataset_keys(type(datamodule))
    check_described_data(recipe.num_classes, recipe.num_examples, reads is None or "num_examples" in reads,
                         datamodule.class_names, counts, where)
    check_training_samples(counts, datamodule.class_names, recipe.batch_size * recipe.accumulate_grad_batches,
                           count * num_nodes(count), where)
    weights = resolve_class_weights(recipe.class_weights, datamodule.class_names, counts, where)
    module = build_module(recipe, DataSpec.of(datamodule), weights)
    check_batch_norm(module.net, recipe.batch_size, recipe.network)
    check_train_sizes(module, recipe)
    rank_zero = is_global_zero()
    # One run at a time under a prefix, from before it looks at the checkpoints there to its end (rank 0 holds it
    # for a multi-process run: the others write none).
    with prefix_held(recipe.model_prefix if rank_zero else None), \
            step_batches(datamodule, recipe.accumulate_grad_batches, recipe.dataset):
        return _fit_holding_prefix(recipe, datamodule, module, where, allow_any_class, overwrite, rank_zero, start)


def check_train_sizes(module, recipe: Recipe) -> None:
    """Refuses progressive resizing (``min_res``/``max_res``) for a network that cannot take the sizes it
    trains at: one forward pass of a zero image at each distinct training size of the run, in eval mode and
    without gradients (weights, buffers and random state untouched), before anything is written. lenet and mlp
    fail it (their linear layers are sized for image_shape); networks with global pooling pass.

    Raises:
        UsageError: naming the network, the size it refused and the flags.
    """
    import torch

    schedule = module.train_resolution
    if schedule is None:
        return
    c, h, w = module.example_input_array.shape[1:]
    net = module.net
    was_training = net.training
    net.eval()
    try:
        for side in schedule.sides(recipe.num_epochs):
            size = schedule.scale(side, h, w)
            try:
                with torch.no_grad():
                    out = net(torch.zeros(1, c, *size))
                ok, why = tuple(out.shape) == (1, module.hparams.num_classes), f"output of shape {tuple(out.shape)}"
            except Exception as exc:  # noqa: BLE001 - any failure of the network on that size is the answer
                ok, why = False, _first_line(exc)
            if not ok:
                raise UsageError(f"network {recipe.network} cannot train at {size[0]}x{size[1]} px (min_res "
                                 f"{schedule.min_res}, max_res {schedule.max_res}; its input is {h}x{w}): {why}; use a "
                                 "network that takes any size (global pooling: resnet18, resnet50, timm's), or "
                                 "unset --min-res and --max-res")
    finally:
        net.train(was_training)


def check_accumulation(recipe: Recipe, workers: int) -> None:
    """Refuses gradient accumulation across synchronous workers: DDP all-reduces the gradients in the backward pass
    that follows its forward, once per Lightning item, so the later micro-batches of a step would stay unsynced
    and the workers' weights would drift apart. ``dist_async`` workers train alone and may accumulate; any other
    kv_store (a plugin's too) is taken as synchronous.

    Raises:
        UsageError: ``accumulate_grad_batches`` > 1 with ``workers`` > 1 synchronous workers.
    """
    if recipe.accumulate_grad_batches > 1 and workers > 1 and recipe.kv_store != "dist_async":
        raise UsageError(f"accumulate_grad_batches {recipe.accumulate_grad_batches} works on one worker (or "
                         f"kv_store dist_async), not with {workers} synchronous workers (kv_store {recipe.kv_store}): "
                         "they already share the batch; use accumulate_grad_batches 1, or a larger batch_size")


@contextlib.contextmanager
def step_batches(datamodule, accumulate: int, dataset: str):
    """Makes ``datamodule``'s batches ``accumulate`` times its ``batch_size`` while a fit runs (and restores it):
    a Lightning item is then the samples of one optimizer step, which the module splits into ``accumulate``
    micro-batches (:class:`~lit_imgcls.training_options.OptimConfig`), so that Lightning's item counts, the LR
    schedule's length, the Speedometer and step checkpoints all stay in optimizer steps, and a checkpoint never
    falls between two micro-batches of a step.

    Raises:
        UsageError: ``accumulate`` > 1 with a DataModule that has no integer ``batch_size`` attribute.
    """
    if accumulate == 1:
        yield
        return
    batch = getattr(datamodule, "batch_size", None)
    if not isinstance(batch, int) or isinstance(batch, bool):
        raise UsageError(f"accumulate_grad_batches {accumulate} needs a DataModule whose batch_size attribute sets "
                         f"its batches, and dataset {dataset}'s has none: use accumulate_grad_batches 1")
    datamodule.batch_size = batch * accumulate
    try:
        yield
    finally:
        datamodule.batch_size = batch


def _fit_holding_prefix(recipe: Recipe, datamodule, module, where: str, allow_any_class: bool, overwrite: bool,
                        rank_zero: bool, start: float) -> RunResult:
    """The rest of :func:`fit`, with the prefix's lock held: resume or fresh start, callbacks, the training."""
    ckpt = resume_path(recipe)
    done = (epoch_of(ckpt, recipe.model_prefix) or 0) if ckpt else 0
    if ckpt and done >= recipe.num_epochs:
        why = f"{ckpt} ends epoch {done} and num_epochs is {recipe.num_epochs}: nothing left to train"
        if recipe.resume == "auto":  # rerunning a finished run's command line is not a mistake
            return RunResult({}, 0.0, time.perf_counter() - start, float("nan"), ckpt, None, reports=rank_zero,
                             first_epoch=done, epochs_done=done, num_epochs=recipe.num_epochs, nothing_to_train=why)
        raise UsageError(f"{why}; give a larger --num-epochs to train on")
    if ckpt:
        check_resumable(ckpt, module, datamodule, recipe, data_where(recipe), report=rank_zero)
    elif recipe.model_prefix:
        check_fresh_prefix(recipe.model_prefix, overwrite, report=rank_zero)
    from lit_imgcls.preflight import check_outputs

    check_outputs(recipe, module, report=rank_zero)
    if recipe.model_prefix and rank_zero:
        from lit_imgcls.io import remove_stale_temporaries

        if removed := remove_stale_temporaries(recipe.model_prefix):
            print(f"lit-imgcls: removed {removed} half-written file(s) a killed run left under {recipe.model_prefix}",
                  file=sys.stderr, flush=True)
    if ckpt:
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"resuming from {ckpt}")
    run = _RunCallbacks(recipe, allow_any_class)
    logger = _logger(recipe, datamodule)
    trainer = build_trainer(recipe, run.callbacks, logger=logger)
    # Everything built so far lives for the whole run: freezing it keeps Python's cyclic GC from rescanning it
    # while Lightning's per-step allocations trigger collections (measured: ~1% of a LeNet step on 2 cores).
    gc.collect()
    gc.freeze()
    try:
        with run.interrupt.early_sigterm(), run.translated_errors(trainer, recipe.model_prefix if rank_zero else None):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    finally:
        gc.unfreeze()
    steps = module.steps_taken
    if steps <= 0:
        raise UsageError(f"the run took no training step: {where} gave no batch of {recipe.batch_size} "
                         f"(per device) in epoch {trainer.current_epoch}; check the data (lit-imgcls dataset inspect) "
                         "and --batch-size")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    return RunResult(
        metrics=metrics,
        train_seconds=run.speedometer.train_seconds,
        wall_seconds=time.perf_counter() - start,
        samples_per_sec=run.speedometer.epoch_speed,
        checkpoint=run.saver.last_path if run.saver else None,
        run_dir=(logger[0] if isinstance(logger, list) else logger).log_dir,
        reports=trainer.is_global_zero,
        first_epoch=module.epoch_at_start,
        epochs_done=trainer.current_epoch,
        num_epochs=recipe.num_epochs,
        steps=steps,
    )


@dataclass
class Evaluation:
    """What ``validate`` or ``test`` measured, and on which weights."""

    metrics: dict[str, float]  # val/acc, val/loss, ... (test/... for test)
    checkpoint: str  # the checkpoint scored (a path or URL)
    epoch: int | None  # the epoch it ends, when its name tells (PREFIX-NNNN.ckpt)
    ema: bool = False  # its weights are the EMA of the trained ones
    tta_flip: bool = False  # scored with test-time flip averaging


def evaluate(recipe: Recipe, stage: str, checkpoint: str | None = None, allow_any_class: bool = False) -> Evaluation:
    """Runs validation or test with the weights of ``checkpoint`` (default: ``--load-epoch``, else the newest).

    Raises:
        UsageError: no checkpoint to score, or one that does not fit the recipe or its data.
    """
    validate(recipe, allow_any_class=allow_any_class)
    if checkpoint is None:
        checkpoint = resume_path(recipe)
    if checkpoint is None and recipe.model_prefix:
        epochs = existing_epochs(recipe.model_prefix)
        if epochs:
            checkpoint = epoch_path(recipe.model_prefix, epochs[-1])
    if checkpoint is None:
        raise UsageError(f"{stage} needs trained weights: give --model-prefix (newest epoch is used) and/or --load-epoch")
    from lit_imgcls.checkpoint_meta import check_network, load_weights, read_meta
    from lit_imgcls.io import load_checkpoint

    # The checkpoint first: a damaged or malformed one, or another network's, is its one line before any data
    # or network is built.
    ckpt = load_checkpoint(checkpoint)
    meta = read_meta(ckpt, checkpoint, need_config=False)
    check_network(meta, recipe.network, recipe.num_layers, checkpoint, OTHER_NETWORK_HINT)
    prepare_process(recipe)
    datamodule = build_datamodule(recipe)
    check_described_data(recipe.num_classes, None, True, datamodule.class_names, None, data_where(recipe))
    module = build_module(recipe, DataSpec.of(datamodule))
    match_checkpoint(datamodule, meta, checkpoint, data_where(recipe))
    load_weights(module, ckpt["state_dict"], checkpoint, recipe.network, meta.recipe.get("network"), OTHER_NETWORK_HINT)
    trainer = build_trainer(recipe, [])
    run = trainer.validate if stage == "validate" else trainer.test
    out = run(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (out[0] if out else {}).items()}
    return Evaluation(metrics, checkpoint, epoch_of(checkpoint, recipe.model_prefix), ema=meta.ema,
                      tta_flip=recipe.tta_flip)
