"""One step unit: the optimizer step (``trainer.global_step``), everywhere a step is shown, logged, saved or charted.

With fused batches (``fused_steps`` K > 1, in-memory data) one Lightning item holds K batches and
:class:`~lit_imgcls.module.ImageClassifier` takes K optimizer steps on it, so Lightning's own counts (``batch_idx``,
``num_training_batches``, ``estimated_stepping_batches``, and the step its logger connector gives validation
metrics) count items, not steps. This module turns items into steps, and :class:`StepUnits` keeps Lightning's
logging step equal to the global step and the fused items aligned with what is reported or saved:

- Everything periodic inside an epoch counts the optimizer steps *of that epoch*, as MXNet's ``Batch [a-b]`` did:
  Speedometer windows (every ``disp_batches``), the progress bar, step checkpoints (every ``save_every_steps``).
  A Lightning item is indivisible (a checkpoint or a report can only fall between two items), so the number of
  batches fused into one item is lowered to ``gcd(fused_steps, disp_batches, save_every_steps)``, with one note
  when that changes it: speed only, the training is the same (each batch is still one optimizer step).
- Every step number written anywhere (metrics.csv rows, ``events.jsonl``, checkpoint names, the
  ``final:`` line) is the global optimizer step.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import lightning as L

KEY = "lit_imgcls_step_units"  # checkpoint entry: the fused item size a mid-epoch position is counted in


def aligned_fused_steps(fused_steps: int, *periods: int | None) -> int:
    """The largest item size (batches per Lightning item) <= ``fused_steps`` that divides every period given.

    >>> aligned_fused_steps(8, 100, None)
    4
    >>> aligned_fused_steps(8, 20, 48)
    4
    >>> aligned_fused_steps(8, 200)
    8
    """
    return math.gcd(int(fused_steps), *(int(p) for p in periods if p))


def steps_in_items(trainer: L.Trainer, items: int) -> int:
    """Optimizer steps in the first ``items`` items of an epoch of the training loader."""
    loader = trainer.train_dataloader
    if items <= 0:
        return 0
    return int(loader.steps_in(items)) if hasattr(loader, "steps_in") else int(items)


def steps_per_epoch(trainer: L.Trainer) -> int | None:
    """Optimizer steps in one epoch (``limit_train_batches`` included); None for a loader without a length."""
    items = trainer.num_training_batches
    if items == float("inf"):
        return None
    return steps_in_items(trainer, int(items))


def total_steps(trainer: L.Trainer) -> int | None:
    """Optimizer steps of the whole run (all ``max_epochs``), or None when an epoch's length is unknown."""
    per_epoch = steps_per_epoch(trainer)
    epochs = trainer.max_epochs
    if per_epoch is None or epochs is None or epochs < 0:
        return None
    return per_epoch * epochs


def _note(trainer: L.Trainer, text: str) -> None:
    if trainer.is_global_zero:
        print(f"lit-imgcls: note: {text}", file=sys.stderr, flush=True)


class StepUnits(L.Callback):
    """Keeps Lightning's counts in optimizer steps and fused items aligned with reports and step checkpoints.

    - Lightning logs metrics that a module or callback logs through it (validation among them) at
      ``fit_loop.epoch_loop._batches_that_stepped``, which counts items (and trails by one at an epoch's
      validation); this callback keeps it equal to ``trainer.global_step`` before and after every item, so
      validation rows in metrics.csv sit at the step where the epoch ended, as the Speedometer's rows do.
      Lightning saves that counter in the loop state; it is set again when training starts, so a resumed run
      (from any checkpoint) logs at the right step too.
    - At setup, a DataModule with ``fused_steps`` > 1 gets the aligned value (:func:`aligned_fused_steps`).
      A run resumed in the middle of an epoch keeps the value its checkpoint was saved with, since the loader's
      position is counted in items of that size.

    Args:
        disp_batches: steps between two Speedometer reports.
        save_every_steps: steps between two step checkpoints, if any.
    """

    def __init__(self, disp_batches: int, save_every_steps: int | None = None) -> None:
        self.disp_batches = int(disp_batches)
        self.save_every_steps = int(save_every_steps) if save_every_steps else None
        self.fused_steps: int | None = None  # the item size this run trains with (None: not a fused loader)

    # -- item size -----------------------------------------------------------------------------------------------
    @staticmethod
    def _fusable(trainer: L.Trainer) -> Any:
        """The DataModule whose training items can hold several batches, or None."""
        dm = trainer.datamodule
        if dm is None or trainer.world_size > 1 or not hasattr(dm, "fused_steps"):
            return None  # data-parallel workers take one step per item (DDP syncs once per forward)
        return dm

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or (dm := self._fusable(trainer)) is None or int(dm.fused_steps or 1) <= 1:
            return
        asked = int(dm.fused_steps)
        self.fused_steps = aligned_fused_steps(asked, self.disp_batches, self.save_every_steps)
        if self.fused_steps != asked:
            dm.fused_steps = self.fused_steps
            periods = f"disp_batches {self.disp_batches}" + (
                f" and save_every_steps {self.save_every_steps}" if self.save_every_steps else "")
            _note(trainer, f"fused_steps {asked} lowered to {self.fused_steps}, the largest that divides {periods}, "
                           "so reports and step checkpoints fall between fused batches (speed only: the training "
                           "is the same)")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != "fit":
            return
        items = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        checkpoint[KEY] = {
            "fused_steps": int(getattr(trainer.train_dataloader, "fused_steps", 1) or 1),
            "mid_epoch": bool(0 < items < trainer.num_training_batches),
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(KEY)
        dm = self._fusable(trainer)
        if not isinstance(saved, dict) or not saved.get("mid_epoch") or dm is None:
            return
        fused = int(saved.get("fused_steps", 1))
        if fused != int(dm.fused_steps or 1) and fused >= 1:
            # Called before the training loader is made (single-device strategies restore before setup).
            _note(trainer, f"resuming inside an epoch: fused_steps is the checkpoint's {fused} after all, not "
                           f"{dm.fused_steps}, because the loader's position in the epoch is counted in items of "
                           f"{fused} {'batch' if fused == 1 else 'batches'} (speed only: the training is the same)")
            dm.fused_steps = self.fused_steps = fused

    # -- Lightning's logging step -------------------------------------------------------------------------------
    @staticmethod
    def _sync(trainer: L.Trainer) -> None:
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._sync(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Validation, when the epoch ends with this item, runs after this hook and before Lightning adds one.
        self._sync(trainer)
