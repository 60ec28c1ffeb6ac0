"""Ctrl-C during training: the first stops gracefully with a checkpoint, as SIGTERM does; a second quits at once."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import lightning as L


class GracefulInterrupt(L.Callback):
    """Turns the first SIGINT into Lightning's SIGTERM handling and the second into an immediate exit (130).

    Lightning stops after the current step on SIGTERM (every worker, rank 0 deciding), and RunEvents saves
    ``PREFIX-stop.ckpt`` then. Lightning's own Ctrl-C handling instead abandons the step with no checkpoint and
    ignores further Ctrl-C while it shuts down, which leaves an impatient user nothing but kill -9.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None  # "SIGINT" once Ctrl-C asked the run to stop
        self._previous: Any = None
        self._installed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        except ValueError:  # not the main thread (a notebook's worker, say): keep the default behaviour
            pass

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            print("\nlit-imgcls: second Ctrl-C: quitting now, without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGINT)
        self.signal_name = "SIGINT"
        print("\nlit-imgcls: Ctrl-C: stopping after this step and saving a checkpoint "
              "(press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        sigterm = signal.getsignal(signal.SIGTERM)
        if callable(sigterm):  # Lightning's notifier: marks the trainer, tells the other workers
            sigterm(signal.SIGTERM, frame)
        else:
            raise KeyboardInterrupt

    def _restore(self) -> None:
        if self._installed:
            self._installed = False
            try:
                signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            except ValueError:
                pass

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
