"""Checkpoints every N optimizer steps, so a crash in a long epoch costs at most N steps."""

from __future__ import annotations

import lightning as L

from lit_imgcls.callbacks.saving import save_or_fail
from lit_imgcls.callbacks.step_units import steps_in_items
from lit_imgcls.checkpoints import step_checkpoints, step_path


class StepCheckpoint(L.Callback):
    """Saves ``{prefix}-step-{global_step:08d}.ckpt`` each time the optimizer steps of the epoch pass a multiple
    of ``every``, as the Speedometer counts its windows; the name holds the global optimizer step. With fused
    batches the item size divides ``every`` (:mod:`lit_imgcls.callbacks.step_units`), so the saves fall exactly
    ``every`` steps apart within an epoch.

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

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Steps of the epoch before and after this item (a resumed epoch continues its count from batch_idx).
        if steps_in_items(trainer, batch_idx + 1) // self.every <= steps_in_items(trainer, batch_idx) // self.every:
            return
        step = trainer.global_step
        if trainer.received_sigterm or batch_idx + 1 >= trainer.num_training_batches:
            return  # a stop checkpoint, or the epoch's, follows at once
        path = step_path(self.prefix, step)
        save_or_fail(trainer, path)
        self.last_path = path
        if trainer.is_global_zero:
            from lit_imgcls.io import remove_checkpoint

            for old in step_checkpoints(self.prefix)[: -self.keep]:
                if old != path:
                    remove_checkpoint(old)
