"""One checkpoint per epoch with the epoch in its name (``model/mnist-0008.ckpt``), as MXNet's --model-prefix."""

from __future__ import annotations

import lightning as L

from lit_imgcls.callbacks.saving import save_or_fail
from lit_imgcls.checkpoints import epoch_path, recipe_path
from lit_imgcls.io import write_text


class EpochCheckpoint(L.Callback):
    """Saves ``{prefix}-{epoch:04d}.ckpt`` after every ``period`` epochs and the last, and the recipe beside them.

    The end of the first epoch is saved as 0001, like MXNet; ``--load-epoch 1`` resumes from it at epoch 1.

    Args:
        prefix: path prefix of the files (a local path or a URL: :mod:`lit_imgcls.storage`).
        period: epochs between two checkpoints.
        recipe_yaml: the resolved recipe, written to ``{prefix}-recipe.yaml``.
    """

    def __init__(self, prefix: str, period: int = 1, recipe_yaml: str | None = None) -> None:
        self.prefix = prefix
        self.period = period
        self.recipe_yaml = recipe_yaml
        self.last_path: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.recipe_yaml is not None:
            write_text(recipe_path(self.prefix), self.recipe_yaml)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if done % self.period == 0 or done >= (trainer.max_epochs or done):
            path = epoch_path(self.prefix, done)
            save_or_fail(trainer, path)
            self.last_path = path
