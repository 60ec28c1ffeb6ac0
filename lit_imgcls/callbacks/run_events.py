"""Run events: one JSON object per line in ``<run folder>/events.jsonl``, for ``lit-imgcls tui`` and other watchers.

Events (every one has ``t``, seconds since the epoch, and ``type``)::

    {"type": "start", "pid", "recipe": {...}, "total_steps", "num_epochs", "start_epoch", "start_step", "log_dir"}
    {"type": "step", "step", "epoch", "samples_per_sec", "train_acc", "train_loss", "lr"}      every disp_batches
    {"type": "epoch", "epoch", "step", "val_acc", "val_loss", "train_acc", "train_loss", "epoch_time",
     "samples_per_sec", "checkpoint"}                                                         after each epoch
    {"type": "end", "status": "finished" | "failed" | "stopped", "error"?, "checkpoint"?}

A run stops gracefully on SIGTERM: Lightning notes the signal, the current step finishes, this callback saves
``MODEL_PREFIX-stop.ckpt`` (or ``stop.ckpt`` in the run folder without a prefix), writes the "stopped" end event,
and Lightning then leaves ``fit`` with its SIGTERMException (a SystemExit): no validation or epoch checkpoint is
made for the unfinished epoch. Only rank 0 writes the file; it costs one small write every disp_batches steps.
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
    return os.path.abspath(path) if path else None


class RunEvents(L.Callback):
    """Appends run events (start, step, epoch, end) as JSON lines to the logger's run folder.

    Args:
        recipe: the run's recipe (written into the start event; model_prefix names the stop checkpoint).
        speedometer: the run's Speedometer, whose ``last_metrics`` give the step and epoch numbers.
        saver: the run's EpochCheckpoint, if any, whose ``last_path`` is reported with each epoch.
    """

    def __init__(self, recipe: Any, speedometer: Any, saver: Any = None) -> None:
        self.recipe = recipe
        self.speedometer = speedometer
        self.saver = saver
        self.path: str | None = None
        self.stop_checkpoint: str | None = None
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
        try:
            total = int(trainer.estimated_stepping_batches)
        except Exception:  # an iterable dataset without a length
            total = None
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
        if trainer.received_sigterm:
            # Lightning raises its SIGTERMException right after this hook: keep the weights first.
            self._save_stop(trainer)

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
        if isinstance(exception, SIGTERMException) and self.stop_checkpoint is None:
            self._save_stop(trainer)  # the signal came during validation or at an epoch's end
        if self._file is not None and not self._ended:
            self._ended = True
            event: dict[str, Any] = {"type": "end", "status": "stopped" if stopped else "failed"}
            if stopped:
                event["checkpoint"] = _abs(self.stop_checkpoint)
            else:
                text = (str(exception).strip().splitlines() or [""])[0][:300]
                event["error"] = f"{type(exception).__name__}: {text}" if text else type(exception).__name__
            self._emit(event)
        self._close()

    def _save_stop(self, trainer: L.Trainer) -> None:
        if self.stop_checkpoint is not None:
            return
        prefix = self.recipe.model_prefix
        if prefix:
            path = f"{prefix}-stop.ckpt"
        elif self.path:
            path = os.path.join(os.path.dirname(self.path), "stop.ckpt")
        else:
            path = os.path.join(trainer.default_root_dir, "stop.ckpt")
        try:
            trainer.save_checkpoint(path, weights_only=False)  # every rank calls; the strategy writes on rank 0
        except Exception as exc:  # the run stops either way; say why the weights are missing
            self._emit({"type": "log", "text": f"stop checkpoint failed: {type(exc).__name__}: {exc}"})
            return
        self.stop_checkpoint = path
