"""The checkpoint of a run stopped on request (SIGTERM, the TUI's stop key, Ctrl-C), saved before it exits."""

from __future__ import annotations

import os

import lightning as L

from lit_imgcls.checkpoints import stop_path
from lit_imgcls.printable import warn


class StopCheckpoint(L.Callback):
    """Saves ``PREFIX-stop.ckpt`` (without a prefix: ``stop.ckpt`` in the run folder) when the run got SIGTERM.

    Lightning notes the signal, lets the current step finish and raises its SIGTERMException right after the
    batch's hooks; this saves the weights first. A signal during validation or at an epoch's end is caught in
    ``on_exception``. Every rank calls the save (the strategy writes on rank 0); weights holding NaN or infinity are
    not saved (:func:`~lit_imgcls.callbacks.saving.check_weights`).

    Args:
        prefix: the run's model_prefix, or None.
    """

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix
        self.path: str | None = None  # the stop checkpoint, once saved
        self.error: str | None = None  # why saving it failed, if it did
        self._log_dir: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_dir = trainer.log_dir  # a broadcast from rank 0 under DDP: asked here, where every rank is

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.received_sigterm:
            self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Saves once; a failure is kept in ``error`` (the run stops either way)."""
        if self.path is not None or self.error is not None:
            return
        if self.prefix:
            path = stop_path(self.prefix)
        else:
            path = os.path.join(self._log_dir or trainer.default_root_dir, "stop.ckpt")
        try:
            from lit_imgcls.callbacks.saving import check_weights

            check_weights(trainer)  # a diverged run's weights are not worth resuming from
            trainer.save_checkpoint(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - say why the weights are missing, then stop as asked
            self.error = f"stop checkpoint failed: {type(exc).__name__}: {exc}"
            warn(self.error)
            return
        self.path = path
