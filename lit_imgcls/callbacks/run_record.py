"""Writes the resolved recipe into the run folder once the logger has made it."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from lit_imgcls.io import atomic_write_text


class RunRecord(L.Callback):
    """Saves ``recipe.yaml`` beside the logger's metrics, so every run folder says how it was made.

    Args:
        recipe_yaml: the resolved recipe.
    """

    def __init__(self, recipe_yaml: str) -> None:
        self.recipe_yaml = recipe_yaml

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast from rank 0 under DDP: every rank must ask
        if trainer.is_global_zero and log_dir:
            atomic_write_text(Path(log_dir) / "recipe.yaml", self.recipe_yaml)
