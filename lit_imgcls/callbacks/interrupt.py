"""Stopping a run on request: the first Ctrl-C stops gracefully with a checkpoint, as SIGTERM does; a second quits at
once; and a run blocked in I/O (a stalled download, a hung network file system) still ends within a grace period."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import lightning as L

from lit_imgcls.errors import UsageError

GRACE_ENV = "LIT_IMGCLS_STOP_GRACE"
DEFAULT_GRACE = 25.0  # seconds: under the 30 s most schedulers (Slurm, Kubernetes) wait before SIGKILL


# While a run handles Ctrl-C here (between the callback's setup and teardown), a process forked from it (a data
# loader worker) ignores SIGINT: a terminal's Ctrl-C reaches the whole process group, and a worker that inherited
# the handler printed its own "Ctrl-C: stopping" and died (exit 130), which failed the run with a traceback and
# no stop checkpoint. The run's main process stops the step, saves, and shuts its workers down itself.
_HANDLING_CTRL_C = False
_FORKED_FROM_A_RUN = False  # this process is such a child (loader_worker_init reads it)


def _after_fork_in_child() -> None:
    global _HANDLING_CTRL_C, _FORKED_FROM_A_RUN
    if _HANDLING_CTRL_C:
        _HANDLING_CTRL_C = False
        _FORKED_FROM_A_RUN = True
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # forked from a thread that Python does not take for the main one: nothing to change
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the run's data loaders: a worker forked during a run also ignores SIGTERM.

    A cluster's SIGTERM reaches every process of the job (SLURM signals the whole step), and PyTorch's workers die
    of it (its worker loop installs a handler that re-raises it), which failed the run with a DataLoader traceback
    instead of the stop checkpoint. PyTorch installs that handler after the fork, so this runs after it.
    """
    if _FORKED_FROM_A_RUN:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:
            pass


def stop_grace() -> float:
    """Seconds a stopping run may take to reach the end of its step: ``$LIT_IMGCLS_STOP_GRACE``, default 25.

    Raises:
        UsageError: the variable is set to something other than a positive number of seconds.
    """
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:
        raise UsageError(f"{GRACE_ENV}={text[:40]!r}: expected a positive number of seconds (default {DEFAULT_GRACE:g})")
    return value


class GracefulInterrupt(L.Callback):
    """Turns the first SIGINT into Lightning's SIGTERM handling and the second into an immediate exit (130); and
    gives a stop at most ``grace`` seconds to get going.

    Lightning stops after the current step on SIGTERM (every worker, rank 0 deciding), and RunEvents saves
    ``PREFIX-stop.ckpt`` then. Lightning's own Ctrl-C handling instead abandons the step with no checkpoint and
    ignores further Ctrl-C while it shuts down, which leaves an impatient user nothing but kill -9.

    A step blocked in I/O (a data read that never returns) never ends, so that stop would never come. After the
    first SIGTERM or Ctrl-C a timer therefore runs: when no training or validation hook has run within ``grace``
    seconds, the run is taken to be blocked; it says so in one line on stderr and exits at once with 143 (SIGTERM)
    or 130 (Ctrl-C), without a stop checkpoint (its last periodic checkpoint stays). Any hook running first
    (the blocked read returned) disarms the timer, so a slow checkpoint save is never cut short.

    Args:
        grace: seconds; default :func:`stop_grace` (``$LIT_IMGCLS_STOP_GRACE``, 25).
    """

    def __init__(self, grace: float | None = None) -> None:
        self.signal_name: str | None = None  # "SIGINT" once Ctrl-C asked the run to stop
        self.grace = stop_grace() if grace is None else grace
        self._previous: Any = None
        self._installed = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._moving = False  # a hook ran after the signal: the run is not blocked
        self._armed_sigterm = False
        self._early = False  # between fit's start and Lightning's own SIGTERM handler (see early_sigterm)
        self._early_pending = False  # a SIGTERM came then: passed on to Lightning's handler once it exists

    # ---------------------------------------------------------------- the grace timer, on top of Lightning's handler

    @contextlib.contextmanager
    def early_sigterm(self):
        """Around ``trainer.fit``: a SIGTERM before Lightning registers its handler is not the default death (-15).

        Lightning registers its SIGTERM handler only after building the optimizers, and building them may read a
        whole training split (the step count of a small pack decoded into memory), so a read that blocks there
        could only be killed. Until then a SIGTERM arms the grace timer (a blocked run quits with its one line,
        143) and is handed to Lightning's handler once the run starts, which stops it after its first step with
        a checkpoint. The handler from before is put back on leaving, however the fit ended."""
        try:
            previous = signal.signal(signal.SIGTERM, self._on_early_sigterm)
        except ValueError:  # not the main thread: Lightning registers nothing either
            yield
            return
        self._early = True
        try:
            yield
        finally:
            self._early = False
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:
                pass

    def _on_early_sigterm(self, signum: int, frame: Any) -> None:
        if not self._early:  # Lightning's handler calls the one it found too: by then the wrapper has it
            return
        self._early_pending = True
        self._arm()

    def _wrap_sigterm(self) -> None:
        """Puts the timer in front of the SIGTERM handler Lightning registered for this run (its teardown puts the
        one from before the run back, ours included)."""
        self._early = False
        if self._armed_sigterm:
            return
        try:
            current = signal.getsignal(signal.SIGTERM)
        except ValueError:
            return
        if not callable(current):  # Lightning registered nothing (not the main thread): nothing to extend
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            self._arm()
            current(signum, frame)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
            self._armed_sigterm = True
        except ValueError:  # not the main thread
            pass
        if self._early_pending:  # a SIGTERM while the run was being set up: Lightning stops it now
            self._early_pending = False
            current(signal.SIGTERM, None)

    def _arm(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._moving = False
            self._timer = threading.Timer(self.grace, self._give_up, args=(self.signal_name or "SIGTERM",))
            self._timer.daemon = True
            self._timer.start()

    def _progress(self) -> None:
        """A hook ran: whatever blocked has returned, the stop goes its graceful way."""
        if self._timer is not None:
            with self._lock:
                self._moving = True
                self._timer.cancel()

    def _give_up(self, name: str) -> None:
        with self._lock:
            if self._moving:
                return
            what = "Ctrl-C (SIGINT)" if name == "SIGINT" else "SIGTERM"
            print(f"\nlit-imgcls: {what}: the run did not reach the end of its step within {self.grace:g} s "
                  f"({GRACE_ENV}): it is blocked, most likely reading data; quitting now, without a stop checkpoint",
                  file=sys.stderr, flush=True)
            os._exit(128 + (signal.SIGINT if name == "SIGINT" else signal.SIGTERM))

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrap_sigterm()

    def on_train_batch_start(self, *args: Any) -> None:
        self._progress()

    def on_before_backward(self, *args: Any) -> None:
        self._progress()

    def on_train_batch_end(self, *args: Any) -> None:
        self._progress()

    def on_validation_batch_start(self, *args: Any) -> None:
        self._progress()

    def on_validation_batch_end(self, *args: Any) -> None:
        self._progress()

    def on_validation_end(self, *args: Any) -> None:
        self._progress()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        global _HANDLING_CTRL_C
        _HANDLING_CTRL_C = True  # loader workers forked from now on leave Ctrl-C to this process

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        global _HANDLING_CTRL_C
        _HANDLING_CTRL_C = False
        self._progress()

    # ------------------------------------------------------------------------------------------------ Ctrl-C

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrap_sigterm()  # Lightning registered its handler just before the run's stage
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
        if callable(sigterm):  # Lightning's notifier (behind the grace timer): marks the trainer, tells the workers
            # without its "[rank: 0] Received SIGTERM: 15", which would contradict the Ctrl-C line just printed
            log = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")
            disabled, log.disabled = log.disabled, True
            try:
                sigterm(signal.SIGTERM, frame)
            finally:
                log.disabled = disabled
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
        self._progress()
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._progress()
        self._restore()
