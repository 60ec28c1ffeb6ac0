"""``score`` (MXNet's score.py): a checkpoint on a dataset's validation split, with accuracy per class, the
confusion matrix (printed and as a PNG) and images/s.

The data comes through the recipe's own DataModule and the batches through the trained ImageClassifier, the
path ``fit`` validates on, so top-1 here is ``fit``'s val/acc on the same data.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lit_imgcls.errors import UsageError
from lit_imgcls.printable import printable

# Keys that describe this machine or how the run saved and resumed, not the trained model: a checkpoint from a GPU
# cluster scores on a laptop, and one of a run with --save-every-steps or --resume auto scores without its prefix.
MACHINE_KEYS = ("gpus", "num_processes", "kv_store", "load_epoch", "pretrained", "precision", "save_every_steps",
                "resume", "data_nthreads")


@dataclass
class ScoreResult:
    """What ``score`` measured. ``confusion[i, j]`` counts images of class i predicted as class j."""

    checkpoint: str
    dataset: str
    class_names: list[str]
    confusion: np.ndarray
    top1: float
    top_k: int
    topk: float | None
    seconds: float
    images_per_sec: float
    ema: bool = False  # the checkpoint's weights are the EMA of the trained ones
    tta_flip: bool = False  # each image scored with its mirror (test-time flip averaging)
    labels: np.ndarray | None = None  # int64 (N,): each image's true class, in loader order
    probs: np.ndarray | None = None  # float32 (N, C): each image's class probabilities (the report, calibration)
    temperature: float = 1.0  # the temperature they were scored at (a calibrated checkpoint's; 1 = uncalibrated)

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_class_count(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def per_class_accuracy(self) -> np.ndarray:
        counts = self.per_class_count
        return np.divide(np.diag(self.confusion), counts, out=np.full(len(counts), np.nan), where=counts > 0)


def resolve_recipe(meta, overrides: dict[str, Any]):
    """The checkpoint's saved recipe (``meta``: its CheckpointMeta), machine keys reset, then ``overrides`` (the
    keys a user gave) on top."""
    from lit_imgcls.checkpoint_meta import recipe_from_meta
    from lit_imgcls.recipe import Recipe

    notes: dict[str, str] = {}
    recipe = recipe_from_meta(meta, notes)
    for key, note in notes.items():
        if key not in overrides:
            print(f"lit-imgcls: note: {printable(note)}", file=sys.stderr, flush=True)
    defaults = Recipe()
    for key in MACHINE_KEYS:
        setattr(recipe, key, getattr(defaults, key))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Recipe)}
    if unknown:
        raise UsageError(f"unknown recipe keys: {', '.join(sorted(unknown))}")
    recipe = dataclasses.replace(recipe, **overrides)
    recipe.pretrained = None  # the checkpoint's weights are the ones scored
    from lit_imgcls.recipe import dataset_keys
    from lit_imgcls.registry import datasets

    if not recipe.image_shape and "image_shape" in (dataset_keys(datasets.get(recipe.dataset)) or ()):
        # Another dataset must still deliver what the network takes (a grey MNIST model scoring an RGB pack).
        recipe.image_shape = ",".join(str(v) for v in meta.image_shape)
    return recipe


def load_scored(checkpoint: str, overrides: dict[str, Any]):
    """What ``score`` scores: (the loaded checkpoint, its CheckpointMeta, None), or for a file ``lit-imgcls export``
    wrote (None, a CheckpointMeta of its class names and preprocessing and no recipe, its ExportedModel).

    Raises:
        UsageError: an unreadable file; an export without ``dataset`` in ``overrides`` (it holds no recipe), or
            with ``gpus`` or ``tta_flip`` (it runs on the CPU, without flip averaging).
    """
    from lit_imgcls.checkpoint_meta import CheckpointMeta, read_meta
    from lit_imgcls.export import ExportedModel, exported_format
    from lit_imgcls.io import load_checkpoint

    if not exported_format(checkpoint):
        ckpt = load_checkpoint(checkpoint)
        return ckpt, read_meta(ckpt, checkpoint), None
    # An exported file holds the class names and preprocessing, no recipe: the data is named here.
    if "dataset" not in overrides:
        raise UsageError(f"{checkpoint} is an exported model, which holds no recipe: give its validation data "
                         "with --dataset (and --data-val or --data-dir), or score its checkpoint")
    if overrides.get("gpus") or overrides.get("tta_flip"):
        raise UsageError(f"{checkpoint} is an exported model, scored on the CPU without test-time flip "
                         "averaging: leave --gpus and --tta-flip out")
    exported = ExportedModel.load(checkpoint)
    return None, CheckpointMeta({}, list(exported.class_names), exported.data_config, {}), exported


def score(checkpoint: str, overrides: dict[str, Any] | None = None, top_k: int = 5,
          observe: Callable[[Any, Any, Any, Any], None] | None = None,
          temperature: float | None = None) -> ScoreResult:
    """Evaluates ``checkpoint`` on the validation split of its recipe's dataset (or of ``overrides``' dataset).

    Args:
        checkpoint: a PREFIX-NNNN.ckpt written by fit, or a file ``lit-imgcls export`` wrote (ONNX or TorchScript,
            run on the CPU; ``overrides`` must then name the dataset, since such a file holds no recipe).
        overrides: recipe keys replacing the saved recipe's (dataset, data_val, batch_size, gpus, ...).
        top_k: also measure top-k accuracy (at most the class count; < 2 turns it off).
        observe: called with each batch's images as the loader delivered them (uint8 (N, C, H, W), or the
            normalised floats of in-memory arrays), its labels, the checkpoint's probabilities (N, classes) and
            the DataModule: ``export --check`` scores an exported file on the very same batches.
        temperature: score a checkpoint's probabilities at this temperature instead of its own (a calibrated
            checkpoint's, else 1): ``score --calibrate`` fits on the raw ones (1.0). Not for an exported file.

    Raises:
        UsageError: an unusable checkpoint, recipe key or data set (one line).
    """
    import torch

    from lit_imgcls.checkpoint_meta import load_module
    from lit_imgcls.engine import build_datamodule, data_where, devices, match_checkpoint, prepare_process
    from lit_imgcls.recipe import validate

    overrides = dict(overrides or {})
    ckpt, meta, exported = load_scored(checkpoint, overrides)
    recipe = resolve_recipe(meta, overrides)
    recipe.top_k = 0  # top-k is measured here, for any k; the module needs none
    validate(recipe)
    prepare_process(recipe)
    accelerator, device_arg, _ = devices(recipe)
    device = torch.device(f"cuda:{device_arg[0]}" if accelerator == "gpu" else "cpu")
    datamodule = build_datamodule(recipe)
    names = [str(n) for n in datamodule.class_names]
    match_checkpoint(datamodule, meta, checkpoint, data_where(recipe))
    datamodule.prepare_data()
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    if loader is None or (isinstance(loader, (list, tuple)) and not loader):  # packed streams have no len()
        raise UsageError(f"dataset {recipe.dataset} has no validation split here; give one with --data-val")
    if exported is not None:
        from lit_imgcls.export import as_uint8_images

        def probs_of(images):  # the file does its own normalisation, on the uint8 pixels
            return torch.from_numpy(np.array(exported.probabilities(as_uint8_images(images, datamodule)),
                                             dtype=np.float32))
    else:
        # a --network of another is refused
        module, _ = load_module(checkpoint, ckpt, recipe.network, recipe.num_layers,
                                "leave --network out to use the checkpoint's")
        module.to(device).eval()
        # Flip averaging is this command's choice, not the training's; the temperature the checkpoint's own.
        module.evaluation = dataclasses.replace(module.evaluation, tta_flip=bool(recipe.tta_flip),
                                                temperature=module.evaluation.temperature if temperature is None
                                                else temperature)

        def probs_of(images):
            x = images.to(device, non_blocking=True)
            x = module.on_after_batch_transfer((x, None), 0)[0]  # packed loaders deliver uint8: normalise as fit did
            return module.class_probs(x)
    k = min(top_k, len(names)) if top_k > 1 else 0
    confusion = torch.zeros(len(names) * len(names), dtype=torch.long)
    topk_hits = 0
    all_labels: list[np.ndarray] = []
    all_probs: list[np.ndarray] = []
    from lit_imgcls.terminal import progress

    start = time.perf_counter()
    # A bar on a terminal's stderr, a line every few seconds in a log (a long run only); the report is on stdout.
    with torch.inference_mode(), progress(None, "scoring", leave=False) as bar:
        for batch in loader:
            y = batch[1].to(device, non_blocking=True)
            logits = probs_of(batch[0]).to(y.device)  # probabilities (argmax and top-k as of the logits)
            pred = logits.argmax(dim=1)
            confusion += torch.bincount((y * len(names) + pred).cpu(), minlength=len(names) ** 2)
            if k:
                topk_hits += int((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())
            all_labels.append(y.cpu().numpy().astype(np.int64))
            all_probs.append(logits.float().cpu().numpy())
            if observe is not None:
                observe(batch[0], y, logits, datamodule)
            bar.update(len(y))
    seconds = time.perf_counter() - start
    matrix = confusion.view(len(names), len(names)).numpy()
    count = int(matrix.sum())
    if count == 0:
        raise UsageError(f"the validation split of dataset {recipe.dataset} is empty")
    return ScoreResult(
        checkpoint=str(checkpoint), dataset=recipe.dataset, class_names=names, confusion=matrix,
        top1=float(np.trace(matrix)) / count, top_k=k, topk=topk_hits / count if k else None,
        seconds=seconds, images_per_sec=count / seconds if seconds > 0 else float("inf"), ema=meta.ema,
        tta_flip=bool(recipe.tta_flip) and exported is None,
        labels=np.concatenate(all_labels), probs=np.concatenate(all_probs),
        temperature=exported.temperature if exported is not None else module.evaluation.temperature,
    )


def default_png(checkpoint: str | Path) -> Path:
    """``CKPT-STEM-confusion.png`` beside a local checkpoint (``NAME-confusion.png`` beside an exported file); for
    one at a URL (s3://...), in the current folder."""
    from lit_imgcls.storage import basename, is_url, local

    if is_url(str(checkpoint)):
        return Path(f"{Path(basename(str(checkpoint))).stem}-confusion.png")
    p = Path(local(str(checkpoint)))
    from lit_imgcls.export import exported_format

    # An export is named after its checkpoint (mnist-0001.onnx): its own name keeps the checkpoint's PNG.
    return p.with_name(f"{p.name if exported_format(p) else p.stem}-confusion.png")


def report(result: ScoreResult, max_matrix_classes: int = 20) -> str:
    """The text ``score`` prints: totals, per-class accuracy, and the confusion matrix (or, for many classes,
    its largest off-diagonal cells, which a full matrix would bury)."""
    names = [printable(n) for n in result.class_names]  # a checkpoint's or a data set's strings: no terminal escapes
    lines = [(f"score: {result.count} images of {result.dataset} (validation split), "
              f"{result.images_per_sec:.0f} images/s ({result.seconds:.1f} s)"
              + (", EMA weights" if result.ema else "") + (", test-time flip averaging" if result.tta_flip else "")
              + (f", calibrated (temperature {result.temperature:.4f})" if result.temperature != 1 else "")),
             f"top-1 accuracy {result.top1:.6f}"]
    if result.topk is not None:
        lines.append(f"top-{result.top_k} accuracy {result.topk:.6f}")
    nw = max(5, *(len(n) for n in names))
    lines += ["", "per-class accuracy:", f"  {'class':<{nw}}  {'count':>7}  {'correct':>7}  accuracy"]
    for name, n, hit, acc in zip(names, result.per_class_count, np.diag(result.confusion), result.per_class_accuracy):
        lines.append(f"  {name:<{nw}}  {int(n):>7}  {int(hit):>7}  {acc:8.4f}")
    lines.append("")
    if len(names) <= max_matrix_classes:
        cw = max(len(str(int(result.confusion.max()))), *(len(n) for n in names)) + 1
        lines.append("confusion matrix (rows: true class, columns: predicted class):")
        lines.append(f"  {'':<{nw}} " + "".join(f"{n[:cw - 1]:>{cw}}" for n in names))
        for name, row in zip(names, result.confusion):
            lines.append(f"  {name:<{nw}} " + "".join(f"{int(v):>{cw}}" for v in row))
    else:
        off = result.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(off, axis=None)[::-1][:20]
        lines.append(f"most frequent confusions ({len(names)} classes; the full matrix is in the PNG):")
        for flat in order:
            i, j = divmod(int(flat), len(names))
            if off[i, j]:
                lines.append(f"  {names[i]} -> {names[j]}: {int(off[i, j])}")
    return "\n".join(lines) + "\n"


CONFUSION_RECORD = ".lit-imgcls-confusion"  # the folder's record of the --confusion-png files score wrote


def confusion_target(checkpoint: str, given: str | None) -> tuple[Path, bool]:
    """Where ``score`` writes the confusion PNG, checked before any scoring, and whether it is a ``--confusion-png``
    the user named: such a path is replaced only while it holds a PNG score wrote there (:mod:`lit_imgcls.owned_files`,
    record :data:`CONFUSION_RECORD`); the default, ``CKPT-STEM-confusion.png`` (:func:`default_png`), is a name of
    lit-imgcls's own beside the checkpoint, replaced as before.

    Raises:
        UsageError: a URL, a folder, a path under a file, or a file there that score did not write (one line).
    """
    if given is None:
        return default_png(checkpoint), False
    from lit_imgcls.owned_files import check_owned
    from lit_imgcls.storage import local_output

    path = local_output(given, "--confusion-png", "write it here, then copy it")
    if path.is_dir():
        raise UsageError(f"--confusion-png {path} is a folder; give the file to write, like {path / 'confusion.png'}")
    if path.parent.exists():
        check_owned(path.parent, [path.name], CONFUSION_RECORD, "give another --confusion-png")
    return path, True


def save_confusion_png(result: ScoreResult, path: str | Path, owned: bool = False) -> Path:
    """The confusion matrix as a heat map (rows normalised per true class), written atomically; ``owned``
    (a ``--confusion-png`` from :func:`confusion_target`): recorded as ours, and only a file of ours replaced."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lit_imgcls.io import atomic_write

    # Names as the report prints them, and read as plain text: `$...$` in a class name is not TeX for matplotlib.
    names = [printable(n) for n in result.class_names]
    n = len(names)
    counts = result.confusion.sum(axis=1, keepdims=True)
    share = np.divide(result.confusion, counts, out=np.zeros(result.confusion.shape), where=counts > 0)
    side = min(24.0, max(5.0, 0.45 * n + 2))
    # A Figure with its own Agg canvas: no pyplot, so no global backend switch and no display needed.
    fig = Figure(figsize=(side, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 40:
        ax.set_xticks(range(n), labels=names, rotation=90, parse_math=False)
        ax.set_yticks(range(n), labels=names, parse_math=False)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if result.confusion[i, j]:
                    ax.text(j, i, str(int(result.confusion[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    topk = f", top-{result.top_k} {result.topk:.4f}" if result.topk is not None else ""
    ax.set_title(printable(f"{str(result.checkpoint).rpartition('/')[2]} on {result.dataset}: top-1 {result.top1:.4f}{topk}"),
                 parse_math=False)
    fig.tight_layout()
    import io

    from lit_imgcls.owned_files import write_owned

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path = Path(path)
    if not owned:
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_owned(path.parent, {path.name: buffer.getvalue()}, CONFUSION_RECORD, prune=False,
                elsewhere="give another --confusion-png")
    return path


#: The ``format`` field of the JSON ``score --report`` writes beside its page; the TUI finds reports by it.
REPORT_FORMAT = "lit-imgcls score report"
REPORT_VERSION = 1


def report_data(result: ScoreResult, top_k: int | None = None) -> dict[str, Any]:
    """The JSON document of ``score --report``: :func:`lit_imgcls.evaluation.summarize` of the scored images plus
    ``format`` (:data:`REPORT_FORMAT`), ``version``, ``checkpoint``, ``dataset``, ``images_per_sec`` (None when not
    measurable), ``seconds``,
    ``ema``, ``tta_flip`` and ``temperature`` (a calibrated checkpoint's T, else 1). Plain JSON types only (no NaN).

    Raises:
        ValueError: a result without per-image labels and probabilities.
    """
    from lit_imgcls.evaluation import summarize

    if result.labels is None or result.probs is None:
        raise ValueError("this ScoreResult kept no per-image labels and probabilities")
    data = {"format": REPORT_FORMAT, "version": REPORT_VERSION, "checkpoint": result.checkpoint,
            "dataset": result.dataset,
            # None when the pass took no measurable time (images/s is then infinite, which JSON cannot hold)
            "images_per_sec": float(result.images_per_sec) if np.isfinite(result.images_per_sec) else None,
            "seconds": result.seconds,
            "ema": bool(result.ema), "tta_flip": bool(result.tta_flip), "temperature": float(result.temperature)}
    data.update(summarize(result.labels, result.probs, result.class_names,
                          top_k=result.top_k if top_k is None else top_k))
    return data
