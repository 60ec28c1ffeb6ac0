"""ImageClassifier: any ``nn.Module`` in; loss, optimizer, LR schedule and accuracy metrics around it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_imgcls.checkpoint_meta import POSITION_KEY  # checkpoint entry: epoch, steps into it, steps per epoch
from lit_imgcls.evaluation import scaled_softmax
from lit_imgcls.schedules import LRSchedule, ResolutionSchedule
from lit_imgcls.training_options import EMA_KEY, RAW_WEIGHTS_KEY, EvalConfig, OptimConfig, WeightEMA


class ImageClassifier(L.LightningModule):
    """Trains and evaluates a classifier network.

    Args:
        net: the network; maps an image batch (N, C, H, W) to logits (N, num_classes).
        num_classes: number of classes.
        optimizer: sgd or adamw.
        lr: base learning rate.
        momentum: SGD momentum (MXNet's ``--mom``); AdamW's beta1.
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 weight decay (MXNet's ``--wd``).
        lr_schedule: constant, step, multistep, cosine or onecycle (see :class:`LRSchedule`).
        lr_factor: decay factor for step and multistep.
        lr_factor_epoch: epochs between decays for step (fractions allowed).
        lr_step_epochs: epochs of the decays for multistep.
        warmup_epochs: linear LR warm-up.
        onecycle_pct: fraction of steps rising in onecycle.
        label_smoothing: cross-entropy label smoothing.
        class_weights: one weight per class (float, K), for imbalanced classes (the recipe's ``class_weights``):
            the training loss is ``mean_i sum_c w_c t_ic (-log q_ic)`` over the batch's N images, t the target
            distribution (one-hot, smoothed, or mixup/cutmix's soft labels) and q the softmax: each image's
            cross-entropy weighted by its target classes' weights and divided by N, the same rule for hard and
            soft targets (torch's weighted mean of hard targets would divide by the batch's weights instead).
            Validation loss stays unweighted. Default: none, every class 1.
        backbone_lr_mult: LR multiplier of every parameter outside ``net.get_classifier()`` (fine-tuning).
        top_k: also report top-k accuracy when > 1 (MXNet's ``--top-k``).
        class_names: names of the classes, saved in checkpoints for prediction.
        mean: per-channel mean (of [0, 1] pixels) for batches that arrive as uint8 images.
        std: per-channel standard deviation for the same.
        optim: gradient clipping and EMA of the weights (:class:`~lit_imgcls.training_options.OptimConfig`);
            default: neither.
        evaluation: how validation, test and ``score`` score images (test-time flips:
            :class:`~lit_imgcls.training_options.EvalConfig`); default: one plain forward pass.
        batch_augment: the recipe's batch stages (mixup, cutmix: a :class:`~lit_imgcls.data.augment.BatchMix`),
            applied to each normalised training batch; the loss is then the cross-entropy against its soft labels
            (with ``label_smoothing``), and training accuracy counts against the original labels.
        device_augment: the recipe's per-image stages with ``augment_device: true`` (a
            :class:`~lit_imgcls.data.augment.DeviceAugment`), run on each training batch on the training device,
            before ``batch_augment``; its random draws come from (seed, global step, rank).
        train_resolution: progressive resizing (FFCV's ``min_res``/``max_res``/``start_ramp``/``end_ramp``, a
            :class:`~lit_imgcls.schedules.ResolutionSchedule`): each training batch is resized on the training
            device, after its uint8 transfer, ``device_augment`` and normalisation, before ``batch_augment``, to
            the side of the current epoch (bilinear, antialiased: torch's ``F.interpolate``); validation, test and
            prediction keep the input size. Default: none, batches train at the size they arrive in.

    Raises:
        ValueError: ``optim`` holds a value out of range.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 1e-4,
        lr_schedule: str = "constant",
        lr_factor: float = 0.1,
        lr_factor_epoch: float | None = None,
        lr_step_epochs: Sequence[float] = (),
        warmup_epochs: float = 0.0,
        onecycle_pct: float = 0.25,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        backbone_lr_mult: float = 1.0,
        top_k: int = 0,
        class_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        optim: OptimConfig | None = None,
        evaluation: EvalConfig | None = None,
        batch_augment: Callable | None = None,
        device_augment: Callable | None = None,
        train_resolution: ResolutionSchedule | None = None,
    ) -> None:
        super().__init__()
        # Manual optimization: the same zero_grad/backward/step/schedule sequence as automatic optimization,
        # without its per-step closure and hook machinery (about 0.2 ms a step, 3% of a LeNet step on 2 cores).
        self.automatic_optimization = False
        self._plain_backward = False
        self._micro_batch = 0  # > 0 when training items hold several batches of this size
        self.net = net
        # optim is a config object: checkpoints hold plain values only (they are loaded with weights_only), and the
        # recipe in self.meta already records it.
        self.save_hyperparameters(ignore=["net", "optim", "evaluation", "batch_augment", "device_augment",
                                          "train_resolution"])
        self.optim = (optim or OptimConfig()).check()
        self.evaluation = evaluation or EvalConfig()
        self._ema: WeightEMA | None = None  # made when training starts, on the network's device
        self._ema_restored: tuple[dict, int] | None = None  # a resumed run's EMA state until then
        self._ema_swapped = False  # the network holds the EMA weights (during validation)
        self.batch_augment = batch_augment or None
        self.device_augment = device_augment or None
        self.train_resolution = train_resolution
        self._announced_size: tuple[int, int] | None = None  # the training size the log last named
        self.hparams["lr_step_epochs"] = list(lr_step_epochs)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_topk = MulticlassAccuracy(num_classes, top_k=top_k, average="micro") if top_k > 1 else None
        self.test_topk = MulticlassAccuracy(num_classes, top_k=top_k, average="micro") if top_k > 1 else None
        # Running (loss*n, correct) and n over the batches since the Speedometer last read them.
        self.register_buffer("train_window", torch.zeros(2, dtype=torch.float64), persistent=False)
        self._window_count = [0]
        # Packed-data loaders deliver uint8 images; they are normalised here, on the training device, where it is
        # cheapest (and 4x less data crosses from workers and to the GPU).
        m = torch.tensor(mean if mean is not None else (0.0,), dtype=torch.float32).view(1, -1, 1, 1) * 255
        s = torch.tensor(std if std is not None else (1 / 255,), dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.register_buffer("pixel_mean", m, persistent=False)
        self.register_buffer("pixel_std", s, persistent=False)
        # Not persistent: the state_dict stays the network's; the weights travel in hparams and the meta.
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        if weight is not None and (weight.shape != (num_classes,) or not bool(torch.isfinite(weight).all()) or
                                   not bool((weight > 0).all())):
            raise ValueError(f"class_weights must be {num_classes} finite positive numbers, got {class_weights}")
        self.register_buffer("class_weight", weight, persistent=False)
        self.meta: dict[str, Any] = {}  # saved into checkpoints (recipe, class names, version)
        self._synchronous_workers = False
        self._restored_position: dict[str, Any] | None = None
        self._epoch_start_step = 0
        self.resumed_lr: float | None = None  # the LR a resumed run continued with
        self.epoch_at_start = 0  # where this fit began (after a resume: where it continued)
        self.steps_taken = 0  # optimizer steps this process took (a resumed run counts from 0)
        self.last_lr: float | None = None  # the LR of the first parameter group at the last step taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self._micro_batch and len(y) > self._micro_batch:
            # A fused item from TensorBatches: K batches, one optimizer step each.
            for xs, ys in zip(x.split(self._micro_batch), y.split(self._micro_batch)):
                loss = self._optimizer_step(xs, ys)
            return loss
        return self._optimizer_step(x, y)

    def _optimizer_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y
        if self.device_augment is not None:
            x = self._augment_on_device(x)
        if self.train_resolution is not None:
            # After the per-image stages (written for the input size) and normalisation, before mixing.
            x = self.resize_for_training(x, self.trainer.current_epoch)
        if self.batch_augment is not None:
            # Drawn from (seed, global step): a resumed run mixes its batches as the uninterrupted one did.
            x, target = self.batch_augment(x, y, self.trainer.global_step)
        opt, scheduler = self._step_objects
        opt.optimizer.zero_grad(set_to_none=True)
        parts = self.optim.accumulate_grad_batches
        if parts == 1:
            loss = self._backward(x, y, target, opt, 1.0)
        else:
            # Gradient accumulation: the step's samples in parts, each loss weighted by its share, so that the
            # summed gradient is the mean loss's over all of them.
            for xs, ys, ts in zip(x.tensor_split(parts), y.tensor_split(parts), target.tensor_split(parts)):
                if len(ys):
                    loss = self._backward(xs, ys, ts, opt, len(ys) / len(y))
        self.last_lr = opt.optimizer.param_groups[0]["lr"]  # the LR this step used (reports show it)
        opt.step()  # through Lightning's optimizer wrapper, which counts global steps (clips: on_before_optimizer_step)
        if self._ema is not None:
            self._ema.update(self.net)
        scheduler.step()
        self.steps_taken += 1
        return loss

    def _backward(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, opt, weight: float) -> torch.Tensor:
        """Forward and backward of one batch, its loss times ``weight`` (its share of the step); the loss.
        ``target``: ``y``, or the soft labels (N, K) of a mixed batch; accuracy counts against ``y``."""
        logits = self.net(x)
        # Soft targets (N, K) or class indices (N,): F.cross_entropy smooths either the same way.
        if self.class_weight is None:
            loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        else:  # per image, then / N: one rule for hard and soft targets (see class_weights)
            loss = F.cross_entropy(logits, target, weight=self.class_weight, reduction="none",
                                   label_smoothing=self.hparams.label_smoothing).mean()
        self._check_finite(loss, opt)
        scaled = loss if weight == 1.0 else loss * weight
        if self._plain_backward:
            scaled.backward()
        else:
            self.manual_backward(scaled)  # loss scaling (16-mixed), DDP/FSDP/DeepSpeed hooks
        with torch.no_grad():
            n = y.shape[0]
            # In-place adds and a plain list: no per-step Module.__setattr__, no host-device sync.
            self.train_window[0].add_(loss.detach(), alpha=n)
            self.train_window[1].add_((logits.argmax(1) == y).sum())
            self._window_count[0] += n
        return loss

    def _check_finite(self, loss: torch.Tensor, opt) -> None:
        """Stops the run before an update from a NaN or infinite loss (:class:`~lit_imgcls.errors.NonFiniteLoss`).

        Checked before backward, so the weights in memory are still the last finite ones, and on every worker of
        a synchronous run together (one worker stopping alone would leave the others waiting in the gradient
        all-reduce). Reading the flag waits for the step's forward pass: free on the CPU, one synchronisation a
        step on a GPU (the loss is already computed; the update has not been queued yet).
        """
        ok = bool(torch.isfinite(loss.detach()))
        if self._synchronous_workers:
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            from lit_imgcls.errors import NonFiniteLoss

            lr = float(opt.optimizer.param_groups[0]["lr"])
            value = float(loss.detach()) if not bool(torch.isfinite(loss.detach())) else float("nan")
            raise NonFiniteLoss(self.trainer.global_step, self.trainer.current_epoch, lr, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Lightning's generic version walks the batch collection on every step; an (x, y) pair already on the
        # CPU needs none of that, which is measurable with small networks.
        if isinstance(batch, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in batch):
            if all(t.device == device for t in batch):
                return batch
            return type(batch)(t.to(device, non_blocking=True) for t in batch)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_start(self) -> None:
        # Looked up once: self.optimizers() and self.lr_schedulers() cost a few microseconds every call.
        self._step_objects = (self.optimizers(), self.lr_schedulers())
        loader = self.trainer.train_dataloader
        self._micro_batch = loader.batch_size if getattr(loader, "fused_steps", 1) > 1 else 0
        strategy = self.trainer.strategy
        self._synchronous_workers = self.trainer.world_size > 1 and not getattr(strategy, "independent_workers", False)
        self.epoch_at_start = self.trainer.current_epoch
        self._start_ema()
        self._continue_schedule()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Here, not before opt.step(): the precision plugin calls this hook after unscaling 16-mixed gradients
        # (clipping the scaled ones would bound nothing), and routes the clip through the strategy (FSDP's shards).
        if self.optim.clip_gradient > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.optim.clip_gradient,
                                gradient_clip_algorithm=self.optim.clip_gradient_algorithm)

    def _start_ema(self) -> None:
        """The EMA of the weights when ``optim.ema_decay`` is on, continued from a resumed checkpoint's."""
        restored, self._ema_restored = self._ema_restored, None
        if not self.optim.ema_decay:
            return
        self._ema = WeightEMA(self.net, self.optim.ema_decay)
        if restored is not None:
            self._ema.load_net_state(restored[0], "net.", restored[1])

    def on_validation_epoch_start(self) -> None:
        if self._ema is not None and not self._ema_swapped:  # validation during fit scores the EMA weights
            self._ema.swap(self.net)
            self._ema_swapped = True

    def on_validation_epoch_end(self) -> None:
        if self._ema is not None and self._ema_swapped:
            self._ema.swap(self.net)
            self._ema_swapped = False

    def on_train_epoch_start(self) -> None:
        self._epoch_start_step = self.trainer.global_step

    def train_size(self, epoch: int, height: int, width: int) -> tuple[int, int]:
        """(H, W) the network trains on in ``epoch`` (0-based) when batches arrive as ``height`` x ``width``."""
        if self.train_resolution is None:
            return height, width
        return self.train_resolution.size(epoch, height, width)

    def resize_for_training(self, x: torch.Tensor, epoch: int) -> torch.Tensor:
        """A normalised training batch (N, C, H, W) resized to epoch ``epoch``'s training size
        (:attr:`train_resolution`), on its own device: bilinear with antialiasing (torch's ``F.interpolate``),
        so a downscaled batch matches what a decoder producing that size would give, as FFCV's
        ``RandomResizedCropRGBImageDecoder`` does at the ramp's size. Unchanged when the size is already right."""
        size = self.train_size(epoch, x.shape[-2], x.shape[-1])
        if size != self._announced_size:
            self._announced_size = size
            self._announce_train_size(epoch, size, tuple(x.shape[-2:]))
        if size == tuple(x.shape[-2:]):
            return x
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def _announce_train_size(self, epoch: int, size: tuple[int, int], arrived: tuple[int, int]) -> None:
        """One log line when the training size changes (the first epoch's included), on the reporting worker:
        ``Epoch[E] Train-resolution=HxW (...)``, as the Speedometer's lines (and between them, not inside a bar)."""
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        text = (f"Epoch[{epoch}] Train-resolution={size[0]}x{size[1]} (progressive resizing of the "
                f"{arrived[0]}x{arrived[1]} batches; evaluation keeps their size)")
        bar = self.trainer.progress_bar_callback
        if bar is not None:
            bar.print(text)
        else:
            print(text, flush=True)

    def _continue_schedule(self) -> None:
        """After a resume, the new recipe's LR schedule and optimizer settings, at the position reached.

        Lightning restores the optimizer's param groups (LR, momentum, weight decay) and the scheduler (its step
        count, base LRs and the schedule object's fields) as the checkpoint saved them, i.e. the old recipe's: a
        run resumed with more epochs would keep the old cosine length and train the rest at LR 0, a new ``lr``
        would be ignored. MXNet instead builds the new run's schedule and advances it to the resume point; so
        does this: the position is epochs done x the new recipe's steps per epoch, plus the steps already taken in
        an unfinished epoch (whose data and batch size cannot have changed: see :mod:`lit_imgcls.resume_changes`).
        """
        epoch = self.trainer.current_epoch
        saved, self._restored_position = self._restored_position, None
        within = int(saved["steps_into_epoch"]) if saved and int(saved.get("epoch", -1)) == epoch else 0
        self._epoch_start_step = self.trainer.global_step - within
        if saved is None and self.trainer.global_step == 0:
            return  # a fresh run: the schedule starts as configured
        opt, scheduler = self._step_objects
        schedule = self._schedule
        position = epoch * schedule.steps_per_epoch + within if saved is not None else self.trainer.global_step
        groups = opt.optimizer.param_groups
        if len(groups) != len(self._fresh_groups):  # resume_changes refuses the recipe changes that do this
            raise RuntimeError(f"the checkpoint's optimizer has {len(groups)} parameter groups, this run {len(self._fresh_groups)}")
        for group, fresh in zip(groups, self._fresh_groups):
            group.update(fresh)
        scheduler.lr_lambdas = [schedule] * len(groups)
        scheduler.base_lrs = [fresh["initial_lr"] for fresh in self._fresh_groups]
        scheduler.last_epoch = position
        for group, base in zip(groups, scheduler.base_lrs):
            group["lr"] = base * schedule(position)
        scheduler._last_lr = [group["lr"] for group in groups]
        self.resumed_lr = groups[0]["lr"]

    def on_fit_start(self) -> None:
        from lightning.pytorch.strategies import SingleDeviceStrategy

        # One device and no loss scaling: Lightning's manual_backward adds only hook calls around
        # loss.backward() there, ~0.1 ms a step, which is 1-2% of a small network's step on the CPU.
        self._plain_backward = isinstance(self.trainer.strategy, SingleDeviceStrategy) and str(
            self.trainer.precision
        ) in ("32-true", "32", "bf16-mixed", "64-true")
        self.compile_net()

    def compile_net(self) -> None:
        """With ``optim.compile``, compiles the network's forward with torch.compile, in place: the network
        stays ``self.net`` with its parameter names (``torch.compile(net)`` would prefix every checkpoint key
        with ``_orig_mod.``). Called when fit starts (after Lightning's model summary, which would compile an
        eval-mode graph first); the compilation itself happens at the first forward pass."""
        if self.optim.compile and getattr(self.net, "_compiled_call_impl", None) is None:
            self.net.compile()

    def _augment_on_device(self, x: torch.Tensor) -> torch.Tensor:
        """The per-image stages on a training batch, returned normalised. They run on pixels in [0, 1], before
        normalisation: fills mean the host's 0-255 values and colour stages clamp to the range they are written for.
        A uint8 batch (left so by :meth:`on_after_batch_transfer`) is scaled; a normalised float batch (an
        in-memory data set of float images) is taken back to pixels first."""
        with torch.autocast(x.device.type, enabled=False):  # pixel arithmetic in float32 under 16-mixed too
            pixels = x.float() / 255 if x.dtype == torch.uint8 else (x.float() * self.pixel_std + self.pixel_mean) / 255
            pixels = self.device_augment(pixels, self.trainer.global_step, self.global_rank)
            return (pixels * 255 - self.pixel_mean) / self.pixel_std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> float32 (x / 255 - mean) / std, on ``x``'s device; float input as it is."""
        if x.dtype != torch.uint8:
            return x
        return x.float().sub_(self.pixel_mean).div_(self.pixel_std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, (tuple, list)) and isinstance(batch[0], torch.Tensor) and batch[0].dtype == torch.uint8:
            if self.device_augment is not None and self._trainer is not None and self.trainer.training:
                return batch  # the training step augments, then normalises (_augment_on_device)
            return (self.normalize(batch[0]), *batch[1:])
        return batch

    def take_train_window(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float, int]:
        """Mean loss, accuracy and sample count since the last call; resets the window.

        ``reduce`` (a strategy's sum over the workers of a synchronous run, called by every worker at the same
        step) combines the workers' (loss sum, correct, count) first, so the figures are the whole run's.
        """
        window = torch.cat((self.train_window, self.train_window.new_tensor([float(self._window_count[0])])))
        self.train_window.zero_()
        self._window_count[0] = 0
        if reduce is not None:
            window = reduce(window)
        loss_sum, correct, n = window.tolist()
        if n == 0:
            return float("nan"), float("nan"), 0
        return loss_sum / n, correct / n, int(n)

    def _evaluate(self, batch, acc: MulticlassAccuracy, topk: MulticlassAccuracy | None, prefix: str) -> None:
        x, y = batch
        if self.evaluation.tta_flip:
            scores = self.class_probs(x)  # probabilities: the metrics' argmax and top-k are the same on them
            loss = F.nll_loss(scores.clamp_min(torch.finfo(scores.dtype).tiny).log(), y)
        else:
            scores = self.net(x)
            loss = F.cross_entropy(scores, y)
        acc(scores, y)
        self.log(f"{prefix}/loss", loss, on_epoch=True, batch_size=y.shape[0], sync_dist=True)
        self.log(f"{prefix}/acc", acc, on_epoch=True, prog_bar=True)
        if topk is not None:
            topk(scores, y)
            self.log(f"{prefix}/top{self.hparams.top_k}", topk, on_epoch=True)

    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes) of a normalised batch (N, C, H, W); with ``evaluation.tta_flip``
        the mean of the softmax of ``x`` and of ``x`` mirrored left to right; scaled by ``evaluation.temperature``
        (:class:`~lit_imgcls.training_options.EvalConfig`: a calibrated checkpoint's)."""
        temperature = self.evaluation.temperature
        if not self.evaluation.tta_flip:
            return scaled_softmax(self.net(x), temperature)
        probs = (self.net(x).softmax(dim=1) + self.net(x.flip(-1)).softmax(dim=1)) / 2
        # The average scaled as a whole (log p = logits up to a constant per row, which softmax ignores): the
        # probabilities score --calibrate fitted T on, so the fit and its use agree.
        return probs if temperature == 1 else scaled_softmax(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(),
                                                             temperature)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_acc, self.val_topk, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_acc, self.test_topk, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return scaled_softmax(self.net(x), self.evaluation.temperature)

    def configure_optimizers(self):
        hp = self.hparams
        # No weight decay on biases and normalisation parameters: decaying them only hurts accuracy.
        head = self.net.get_classifier() if hp.backbone_lr_mult != 1 and hasattr(self.net, "get_classifier") else None
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        buckets: dict[tuple[bool, bool], list] = {}
        for p in self.net.parameters():
            if p.requires_grad:
                buckets.setdefault((p.ndim > 1, not head_ids or id(p) in head_ids), []).append(p)
        # Each group's LR is scaled by the schedule from its own starting value, so the backbone keeps its ratio.
        groups = [
            {"params": ps, "weight_decay": hp.weight_decay if decays else 0.0,
             "lr": hp.lr if in_head else hp.lr * hp.backbone_lr_mult}
            for (decays, in_head), ps in sorted(buckets.items(), reverse=True)
        ]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov and hp.momentum > 0)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=hp.lr, betas=(hp.momentum, 0.999))
        else:
            raise ValueError(f"unknown optimizer {hp.optimizer!r}; choices: sgd, adamw")
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        loader = self.trainer.train_dataloader
        if hasattr(loader, "steps_in"):  # items holding several optimizer steps (fused batches)
            per_epoch = loader.steps_in(per_epoch)
            total = per_epoch * max(1, self.trainer.max_epochs or 1)
        schedule = LRSchedule(
            kind=hp.lr_schedule,
            steps_per_epoch=per_epoch,
            total_steps=total,
            factor=hp.lr_factor,
            factor_epoch=hp.lr_factor_epoch,
            step_epochs=tuple(hp.lr_step_epochs),
            warmup_epochs=hp.warmup_epochs,
            onecycle_pct=hp.onecycle_pct,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        # This recipe's schedule and group settings, re-applied after a checkpoint's are restored (see
        # _continue_schedule). A copy: the scheduler's load_state_dict writes the saved fields into the very object
        # it holds.
        self._schedule = dataclasses.replace(schedule)
        self._fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_imgcls"] = dict(self.meta)
        if self._ema is not None:
            # "state_dict" gets the EMA weights, which every reader of a checkpoint then uses (validate, predict,
            # score, --pretrained); the trained weights and the EMA's count go beside them for an exact resume.
            state = checkpoint["state_dict"]
            in_net = {k: v for k, v in state.items() if k.startswith("net.")}
            other = self._ema.net_state("net.")
            raw, ema = (other, in_net) if self._ema_swapped else (in_net, other)
            checkpoint[RAW_WEIGHTS_KEY] = {**state, **raw}
            checkpoint["state_dict"] = {**state, **ema}
            checkpoint[EMA_KEY] = {"decay": self._ema.decay, "n_averaged": self._ema.steps}
            checkpoint["lit_imgcls"]["weights"] = "ema"
        if self._trainer is not None and self.trainer.state.fn == "fit":
            schedule = getattr(self, "_schedule", None)
            # Where in its epoch the run stands: resuming maps it onto the new recipe's schedule.
            checkpoint[POSITION_KEY] = {
                "epoch": self.trainer.current_epoch,
                "steps_into_epoch": self.trainer.global_step - self._epoch_start_step,
                "steps_per_epoch": schedule.steps_per_epoch if schedule is not None else None,
            }
        # The RNG state makes a resumed run draw the same random numbers (dropout, augmentation) as an
        # uninterrupted one.
        checkpoint["rng_torch"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.meta:  # a resumed run keeps the meta of its own recipe (build_module set it), not the old run's
            self.meta = dict(checkpoint.get("lit_imgcls", {}))
        if isinstance(checkpoint.get(RAW_WEIGHTS_KEY), dict):
            # Resuming a run with EMA: Lightning loads "state_dict" into the module after this hook, and that must
            # be the trained weights; the EMA weights wait for _start_ema (dropped when this run has EMA off).
            ema = checkpoint.get(EMA_KEY) or {}
            self._ema_restored = (checkpoint["state_dict"], int(ema.get("n_averaged", 1)))
            checkpoint["state_dict"] = checkpoint[RAW_WEIGHTS_KEY]
        position = checkpoint.get(POSITION_KEY)
        self._restored_position = position if isinstance(position, dict) else None
        if isinstance(checkpoint.get("rng_torch"), torch.Tensor):
            torch.set_rng_state(checkpoint["rng_torch"])
