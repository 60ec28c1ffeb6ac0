"""Run events: one JSON object per line in ``<run folder>/events.jsonl``, for ``lit-imgcls tui`` and other watchers.

Events (every one has ``t``, seconds since the epoch, and ``type``)::

    {"type": "start", "pid", "recipe": {...}, "total_steps", "num_epochs", "start_epoch", "start_step", "log_dir"}
    {"type": "step", "step", "epoch", "samples_per_sec", "train_acc", "train_loss", "lr"}      every disp_batches
    {"type": "epoch", "epoch", "step", "val_acc", "val_loss", "train_acc", "train_loss", "epoch_time",
     "samples_per_sec", "checkpoint"}                                                         after each epoch
    {"type": "end", "status": "finished" | "failed" | "stopped", "error"?, "checkpoint"?}

Every step is an optimizer step (``trainer.global_step``), with fused batches too; ``total_steps`` is the run's
optimizer steps over all its epochs, so ``step / total_steps`` is the run's progress.

A run stops gracefully on SIGTERM: Lightning notes the signal, the current step finishes,
:class:`~lit_imgcls.callbacks.stop_checkpoint.StopCheckpoint` saves ``MODEL_PREFIX-stop.ckpt``, this callback writes
the "stopped" end event naming it, and Lightning then leaves ``fit`` with its SIGTERMException (a SystemExit): no
validation or epoch checkpoint is made for the unfinished epoch. Only rank 0 writes the file; it costs one small
write every disp_batches steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, TextIO

import lightning as L

EVENTS_FILE = "events.jsonl"


def _num(value: Any) -> float | None:
    """A JSON-safe float: tensors and numbers as float, NaN/inf and missing as None."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _abs(path: str | None) -> str | None:
    """An absolute local path; a URL (an s3:// checkpoint) as it is."""
    return (path if "://" in path else os.path.abspath(path)) if path else None


class RunEvents(L.Callback):
    """Appends run events (start, step, epoch, end) as JSON lines to the logger's run folder.

    Args:
        recipe: the run's recipe (written into the start event; model_prefix names the stop checkpoint).
        speedometer: the run's Speedometer, whose ``last_metrics`` give the step and epoch numbers.
        saver: the run's EpochCheckpoint, if any, whose ``last_path`` is reported with each epoch.
        stop: the run's StopCheckpoint, if any, whose ``path`` (or ``error``) the "stopped" end event reports; it
            must come before this callback in the trainer's list.
    """

    def __init__(self, recipe: Any, speedometer: Any, saver: Any = None, stop: Any = None) -> None:
        self.recipe = recipe
        self.speedometer = speedometer
        self.saver = saver
        self.path: str | None = None
        self.stop = stop
        self._file: TextIO | None = None
        self._seen: Any = None
        self._ended = False

    # -- writing -----------------------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps({"t": round(time.time(), 3), **event}) + "\n")
            self._file.flush()
        except (OSError, ValueError):  # a full disk or a closed file must never stop training
            pass

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    # -- hooks ---------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast from rank 0 under DDP: every rank must ask
        if not trainer.is_global_zero or not log_dir:
            return
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, EVENTS_FILE)
        self._file = open(self.path, "a", encoding="utf-8")
        from lit_imgcls.callbacks.step_units import total_steps

        total = total_steps(trainer)  # optimizer steps, like every "step" here (None: a loader without a length)
        self._emit({
            "type": "start", "pid": os.getpid(), "recipe": dataclasses.asdict(self.recipe), "total_steps": total,
            "num_epochs": trainer.max_epochs, "start_epoch": trainer.current_epoch, "start_step": trainer.global_step,
            "log_dir": os.path.abspath(log_dir),
        })

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        m = self.speedometer.last_metrics
        if m is not None and m is not self._seen and "train/samples_per_sec" in m:
            self._seen = m
            self._emit({
                "type": "step", "step": trainer.global_step, "epoch": trainer.current_epoch,
                "samples_per_sec": _num(m.get("train/samples_per_sec")), "train_acc": _num(m.get("train/acc")),
                "train_loss": _num(m.get("train/loss")), "lr": _num(m.get("lr")),
            })

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is None:
            return
        m = self.speedometer.last_metrics or {}
        cm = trainer.callback_metrics
        self._emit({
            "type": "epoch", "epoch": trainer.current_epoch, "step": trainer.global_step,
            "val_acc": _num(cm.get("val/acc")), "val_loss": _num(cm.get("val/loss")),
            "train_acc": _num(m.get("train/epoch_acc")), "train_loss": _num(m.get("train/epoch_loss")),
            "epoch_time": _num(m.get("train/epoch_time")), "samples_per_sec": _num(m.get("train/epoch_samples_per_sec")),
            "checkpoint": _abs(getattr(self.saver, "last_path", None)),
        })

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is not None and not self._ended:
            self._ended = True
            self._emit({"type": "end", "status": "finished"})
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        stopped = isinstance(exception, (SIGTERMException, KeyboardInterrupt))
        if self._file is not None and not self._ended:
            self._ended = True
            event: dict[str, Any] = {"type": "end", "status": "stopped" if stopped else "failed"}
            if stopped:
                event["checkpoint"] = _abs(getattr(self.stop, "path", None))
                if getattr(self.stop, "error", None):
                    event["error"] = self.stop.error
            else:
                text = (str(exception).strip().splitlines() or [""])[0][:300]
                event["error"] = f"{type(exception).__name__}: {text}" if text else type(exception).__name__
            self._emit(event)
        self._close()
