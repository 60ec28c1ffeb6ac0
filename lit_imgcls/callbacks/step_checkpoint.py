"""Checkpoints every N optimizer steps, so a crash in a long epoch costs at most N steps."""

from __future__ import annotations

import glob
import os

import lightning as L

from lit_imgcls.callbacks.saving import save_or_fail


def step_checkpoint_path(prefix: str, step: int) -> str:
    return f"{prefix}-step-{step:08d}.ckpt"


def step_checkpoints(prefix: str) -> list[str]:
    """``PREFIX-step-*.ckpt`` files, oldest written first (a rerun from scratch may leave higher step numbers)."""
    found = [p for p in glob.glob(glob.escape(prefix) + "-step-*.ckpt") if p[len(prefix) + 6 : -5].isdigit()]
    return sorted(found, key=os.path.getmtime)


class StepCheckpoint(L.Callback):
    """Saves ``{prefix}-step-{global_step:08d}.ckpt`` each time the global step passes a multiple of ``every``.

    A checkpoint holds Lightning's loop state and the training loader's position, so resuming from one continues
    the epoch where it stopped, in the same data order. The newest ``keep`` are kept (two: should the newest be
    damaged, the one before it is still there). The epoch's last batch is left to the epoch checkpoint.

    Args:
        prefix: path prefix of the files (the recipe's model_prefix).
        every: optimizer steps between two checkpoints.
        keep: step checkpoints kept; older ones are deleted after each save.
    """

    def __init__(self, prefix: str, every: int, keep: int = 2) -> None:
        self.prefix, self.every, self.keep = prefix, int(every), int(keep)
        self.last_path: str | None = None
        self._last_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # after a resume, the next save is N steps on, not at once

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step // self.every <= self._last_step // self.every:
            return
        if trainer.received_sigterm or batch_idx + 1 >= trainer.num_training_batches:
            return  # a stop checkpoint, or the epoch's, follows at once
        path = step_checkpoint_path(self.prefix, step)
        save_or_fail(trainer, path)
        self._last_step, self.last_path = step, path
        if trainer.is_global_zero:
            from lit_imgcls.io import remove_checkpoint

            for old in step_checkpoints(self.prefix)[: -self.keep]:
                if old != path:
                    remove_checkpoint(old)
