"""The progress of ``fit``, ``validate`` and ``test``: one bar in a terminal, plain lines in a log.

Which one is :func:`progress_bar_for`'s choice, by :func:`lit_imgcls.terminal.is_terminal` on stdout (where
Lightning draws its bar):

* a terminal: :class:`StepProgressBar`, Lightning's tqdm bar counting optimizer steps. The Speedometer prints
  through the bar (``tqdm.write``: the bar is cleared, the line written whole, the bar redrawn below it), and so
  do Lightning's own info lines and Python warnings while the bar is up;
* anywhere else (a file, a pipe, CI, ``nohup``): :class:`LogProgress`, no bar and no carriage return: the
  Speedometer's lines, and after :data:`QUIET_SECONDS` without any line a short one such as
  ``Epoch 3: 2400/5004 steps (48%), 20:13 elapsed, about 21:57 left``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from lit_imgcls.callbacks.step_units import steps_in_items, steps_per_epoch

QUIET_SECONDS = 30.0
"""In a log, a progress line comes only after this many seconds without any line of fit's (a long Speedometer
window, a long validation): short epochs print none."""


def progress_bar_for(recipe: Any) -> ProgressBar | None:
    """The progress callback of a run: None when the recipe says ``progress_bar: false`` (the Speedometer's lines
    still print), a bar when stdout is a terminal, plain lines otherwise."""
    from lit_imgcls.terminal import is_terminal

    if not recipe.progress_bar:
        return None
    if is_terminal(sys.stdout):
        return StepProgressBar(refresh_rate=max(1, recipe.disp_batches))  # in optimizer steps
    return LogProgress()


def _epoch_total(trainer: L.Trainer, items: int | float) -> int | float:
    """An epoch's length in optimizer steps (``items``, Lightning's count, when it is unknown)."""
    steps = steps_per_epoch(trainer)
    return steps if steps is not None else items


class StepProgressBar(TQDMProgressBar):
    """``Epoch E: n/N`` in optimizer steps: with fused batches one Lightning item holds several steps, and the
    stock bar would count 118 items in an epoch of 937 steps. After a mid-epoch resume the bar starts where the
    epoch stood (and its rate counts only the steps this process trained).

    While it is up, Lightning's log lines and Python's warnings go through ``tqdm.write`` too, so that no line
    lands in the middle of the bar (``Epoch 0: 100%|####| 46/46`Trainer.fit` stopped ...``).

    Args:
        refresh_rate: optimizer steps between two redraws (the bar is redrawn each time the epoch's step count
            passes a multiple of it, and at the epoch's end).
    """

    def __init__(self, refresh_rate: int = 1, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._started = False  # whether the bar has been placed at this epoch's position yet
        self._above: contextlib.ExitStack | None = None  # the redirection of logs and warnings, while it holds

    @property
    def total_train_batches(self) -> int | float:
        return _epoch_total(self.trainer, super().total_train_batches)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._above is None and trainer.is_global_zero:
            self._above = contextlib.ExitStack()
            self._above.enter_context(_logs_above_the_bar())
            self._above.enter_context(_warnings_above_the_bar())

    def _restore_output(self) -> None:
        if self._above is not None:
            self._above.close()
            self._above = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_output()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_output()

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


def _console_loggers() -> list[logging.Logger]:
    """Lightning's loggers that write to the console themselves (they do unless the root logger has handlers)."""
    found = []
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr) for h in logger.handlers):
            found.append(logger)
    return found


def _logs_above_the_bar() -> contextlib.AbstractContextManager:
    from tqdm.contrib.logging import logging_redirect_tqdm

    loggers = _console_loggers()
    return logging_redirect_tqdm(loggers=loggers) if loggers else contextlib.nullcontext()


@contextlib.contextmanager
def _warnings_above_the_bar():
    """Within: Python's warnings are written with ``tqdm.write`` (above the bar), not onto the bar's line."""
    from tqdm import tqdm

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if file is not None:  # someone asked for a stream of their own
            return shown(message, category, filename, lineno, file, line)
        text = warnings.formatwarning(message, category, filename, lineno, line)
        tqdm.write(text.rstrip("\n"), file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        if warnings.showwarning is show:
            warnings.showwarning = shown


class LogProgress(ProgressBar):
    """Lightning's progress callback for a log (stdout not a terminal): no bar, no carriage return.

    :meth:`print` (which the Speedometer writes through) prints a whole line. After ``quiet`` seconds without
    any line, training adds ``Epoch E: n/N steps (P%), T elapsed, about R left`` (optimizer steps, as the
    Speedometer counts them), validation and test ``Validation: n/N batches (P%), ...``; shorter epochs print none.

    Args:
        quiet: seconds without a line before a progress line is printed.
    """

    def __init__(self, quiet: float = QUIET_SECONDS) -> None:
        super().__init__()
        self.quiet = quiet
        self._enabled = True
        self._last = time.monotonic()  # when this run printed its last line
        self._tic = self._last  # when the epoch (or evaluation) began in this process
        self._from: int | None = 0  # optimizer steps of the epoch done before this process trained it

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, **{"flush": True, **kwargs})
        self._last = time.monotonic()

    def _due(self) -> bool:
        return self._enabled and time.monotonic() - self._last >= self.quiet

    def _say(self, what: str, done: int, total: int | float | None, noun: str, since: float, start: int) -> None:
        from tqdm import tqdm

        elapsed = time.monotonic() - since
        known = total is not None and math.isfinite(total) and total > 0
        text = f"{what}: {done}/{int(total)} {noun} ({100 * done / total:.0f}%)" if known else f"{what}: {done} {noun}"
        text += f", {tqdm.format_interval(elapsed)} elapsed"
        if known and done > start and elapsed > 0:
            text += f", about {tqdm.format_interval((total - done) * elapsed / (done - start))} left"
        self.print(text)

    def on_train_start(self, *_: Any) -> None:
        self._last = time.monotonic()

    def on_train_epoch_start(self, *_: Any) -> None:
        self._tic = time.monotonic()
        self._from = None  # set at the epoch's first item (a run resumed mid-epoch starts past 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._from is None:
            self._from = steps_in_items(trainer, batch_idx)
        if self._due():
            self._say(f"Epoch {trainer.current_epoch}", steps_in_items(trainer, batch_idx + 1),
                      _epoch_total(trainer, self.total_train_batches), "steps", self._tic, self._from)

    def _eval_start(self) -> None:
        self._eval_tic = time.monotonic()

    def _eval_batch_end(self, what: str, batches: Any, batch_idx: int, dataloader_idx: int) -> None:
        if self._due():
            total = batches[dataloader_idx] if isinstance(batches, list) else batches
            self._say(what, batch_idx + 1, total, "batches", self._eval_tic, 0)

    def on_validation_start(self, *_: Any) -> None:
        self._eval_start()

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end(self.validation_description, trainer.num_val_batches, batch_idx, dataloader_idx)

    def on_test_start(self, *_: Any) -> None:
        self._eval_start()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end(self.test_description, trainer.num_test_batches, batch_idx, dataloader_idx)
