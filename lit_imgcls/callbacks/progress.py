"""Lightning's tqdm progress bar, counting the optimizer steps of each epoch instead of Lightning's items."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from lit_imgcls.callbacks.step_units import steps_in_items, steps_per_epoch


class StepProgressBar(TQDMProgressBar):
    """``Epoch E: n/N`` in optimizer steps: with fused batches one Lightning item holds several steps, and the
    stock bar would count 118 items in an epoch of 937 steps. After a mid-epoch resume the bar starts where the
    epoch stood (and its rate counts only the steps this process trained).

    Args:
        refresh_rate: optimizer steps between two redraws (the bar is redrawn each time the epoch's step count
            passes a multiple of it, and at the epoch's end).
    """

    def __init__(self, refresh_rate: int = 1, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._started = False  # whether the bar has been placed at this epoch's position yet

    @property
    def total_train_batches(self) -> int | float:
        steps = steps_per_epoch(self.trainer)
        return steps if steps is not None else super().total_train_batches

    def on_train_start(self, *args: Any) -> None:
        super().on_train_start(*args)
        self._started = False

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._started = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self._train_progress_bar
        if bar is None or bar.disable:
            return
        done = steps_in_items(trainer, batch_idx + 1)
        if not self._started:
            # A run resumed mid-epoch gets no epoch start from Lightning: size and place the bar here.
            self._started = True
            bar.initial = bar.n = steps_in_items(trainer, batch_idx)
            if bar.total is None:
                bar.total = self.total_train_batches
                bar.set_description(f"Epoch {trainer.current_epoch}")  # draws the bar, at the epoch's position
        if done // self.refresh_rate > bar.n // self.refresh_rate or done == bar.total:
            bar.n = done
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))
