"""MXNet's Speedometer: samples/s and training accuracy every ``disp_batches`` batches and per epoch."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from lit_imgcls.callbacks.step_units import steps_in_items


class Speedometer(L.Callback):
    """Prints ``Epoch[E] Batch [a-b] Speed: S samples/sec accuracy=A loss=L lr=R`` and logs the same metrics
    (``lr``: the learning rate of the window's last step).

    ``a`` and ``b`` count the optimizer steps of the epoch (with fused batches too; after a mid-epoch resume the
    count continues where the epoch stood); a report is due each time that count passes a multiple of
    ``disp_batches``, and rows are logged at the global optimizer step. Speed, accuracy and loss cover every
    worker of a synchronous data-parallel run (their sums are reduced across workers at each report, which every
    worker reaches at the same step); asynchronous, independent workers each report their own.

    Args:
        disp_batches: optimizer steps (of an epoch) between two reports.
        verbose: print the lines (metrics are logged either way).
    """

    def __init__(self, disp_batches: int = 20, verbose: bool = True) -> None:
        self.disp_batches = disp_batches
        self.verbose = verbose
        self.train_seconds = 0.0  # time inside training batches, all epochs, validation excluded
        self.epoch_speed = float("nan")
        self.last_metrics: dict[str, float] | None = None  # the latest window's or epoch's metrics (run events read it)

    def _say(self, trainer: L.Trainer, text: str) -> None:
        if not self.verbose:
            return
        bar = trainer.progress_bar_callback
        if bar is not None and trainer.is_global_zero:
            bar.print(text)
        elif trainer.is_global_zero:
            print(text, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed in the middle of an epoch gets no epoch start: count its rest as the epoch.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_tic = self._tic = time.perf_counter()
        self._epoch_samples = self._window_samples = 0
        self._window_start: int | None = None  # steps of the epoch done before the window: set at its first item
        self._epoch_end = self._epoch_tic
        pl_module.take_train_window()  # what an earlier, interrupted epoch left (no reduction: local only)
        self._epoch_loss_sum = self._epoch_correct = 0.0
        self._epoch_count = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Samples of all workers that step together (each trains an equal batch), as MXNet reported a multi-GPU
        # run; asynchronous workers each report their own.
        n = len(batch[1]) * (1 if getattr(trainer.strategy, "independent_workers", False) else trainer.world_size)
        self._window_samples += n
        self._epoch_samples += n
        self._epoch_end = time.perf_counter()
        # Optimizer steps of the epoch, which differ from Lightning's items when batches are fused; the first
        # item after a mid-epoch resume has the items trained before it in its batch_idx.
        done = steps_in_items(trainer, batch_idx + 1)
        if self._window_start is None:
            self._window_start = steps_in_items(trainer, batch_idx)
        if done // self.disp_batches > self._window_start // self.disp_batches:
            self._report(trainer, pl_module, done)

    @staticmethod
    def _reduce(trainer: L.Trainer):
        """The sum over the workers of a synchronous run (None: this worker's figures are the run's)."""
        if trainer.world_size <= 1 or getattr(trainer.strategy, "independent_workers", False):
            return None
        return lambda t: trainer.strategy.reduce(t, reduce_op="sum")

    def _report(self, trainer, pl_module, done: int) -> None:
        now = time.perf_counter()
        speed = self._window_samples / max(now - self._tic, 1e-9)
        loss, acc, n = pl_module.take_train_window(self._reduce(trainer))
        if n:
            self._epoch_loss_sum += loss * n
            self._epoch_correct += acc * n
            self._epoch_count += n
        # The LR the window's last step used; the optimizer's param group already holds the next step's.
        lr = getattr(pl_module, "last_lr", None)
        if lr is None:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        metrics = {"train/samples_per_sec": speed, "train/acc": acc, "train/loss": loss, "lr": lr,
                   "epoch": trainer.current_epoch}
        self.last_metrics = metrics
        self._log(trainer, metrics)
        self._say(
            trainer,
            f"Epoch[{trainer.current_epoch}] Batch [{self._window_start}-{done}]\tSpeed: {speed:.2f} samples/sec"
            f"\taccuracy={acc:.6f}\tloss={loss:.6f}\tlr={lr:.6g}",
        )
        self._window_start = done
        self._window_samples = 0
        self._tic = time.perf_counter()

    @rank_zero_only
    def _log(self, trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = self._epoch_end - self._epoch_tic
        self.train_seconds += seconds
        loss, acc, n = pl_module.take_train_window(self._reduce(trainer))  # every worker gets here together
        if n:
            self._epoch_loss_sum += loss * n
            self._epoch_correct += acc * n
            self._epoch_count += n
        self.epoch_speed = self._epoch_samples / max(seconds, 1e-9)
        metrics = {"train/epoch_samples_per_sec": self.epoch_speed, "train/epoch_time": seconds, "epoch": trainer.current_epoch}
        if self._epoch_count:
            metrics["train/epoch_acc"] = self._epoch_correct / self._epoch_count
            metrics["train/epoch_loss"] = self._epoch_loss_sum / self._epoch_count
        self.last_metrics = metrics
        self._log(trainer, metrics)
        val = trainer.callback_metrics.get("val/acc")
        val_text = f"\tValidation-accuracy={float(val):.6f}" if val is not None else ""
        self._say(
            trainer,
            f"Epoch[{trainer.current_epoch}] Train-accuracy={metrics.get('train/epoch_acc', float('nan')):.6f}"
            f"\tTime cost={seconds:.2f} s\tSpeed: {self.epoch_speed:.2f} samples/sec{val_text}",
        )
