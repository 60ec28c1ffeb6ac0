"""What progress output looks like: bars that redraw in a terminal, plain lines anywhere else.

A progress bar redraws its line with carriage returns. In a terminal that is one line that moves; in a file, a
pipe, CI's log or ``nohup.out`` every redraw stays, and the log fills with half-lines joined by ``\\r``. So the rule,
in one place (:func:`is_terminal`), is: a stream gets a bar only when a person's terminal shows it; anywhere else
progress is a short plain line now and then (:class:`LineProgress`), and ``fit`` prints its Speedometer lines.
``fit``, ``validate`` and ``test`` (Lightning's bar, on stdout: :func:`lit_imgcls.callbacks.progress.progress_bar_for`),
``dataset pack``, ``dataset photos``, ``predict`` and ``score`` (bars on stderr: :func:`progress`) all ask it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

LINE_SECONDS = 5.0
"""In a log, the least time between two progress lines of ``dataset pack``, ``dataset photos``, ``predict`` and
``score`` (``fit`` has its Speedometer lines and adds one only after a longer silence: ``callbacks/progress.py``)."""


def is_terminal(stream: IO[Any] | None = None) -> bool:
    """Whether ``stream`` (default: stdout) is a terminal a person watches, where a progress bar may redraw.

    False for a file, a pipe, a closed or replaced stream (a test's capture), and a terminal that says it cannot
    move its cursor (``TERM=dumb``: Emacs' shell, some CI consoles).
    """
    stream = sys.stdout if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
    return tty and os.environ.get("TERM") != "dumb"


class LineProgress:
    """Progress for a log: ``DESC: N/TOTAL images`` (``DESC: N images`` without a total) at most every ``every``
    seconds, the first only after ``every`` seconds (a short job prints none), and with ``final`` one line at the
    end of a job that finished. No carriage returns: every line is whole. The TUI reads ``dataset pack``'s lines
    (``N/TOTAL images``) for its bar.

    The same calls as tqdm's: ``update(n)``, ``close()``, a ``with`` block.
    """

    def __init__(self, total: int | None, desc: str, noun: str = "images", every: float = LINE_SECONDS,
                 file: IO[Any] | None = None, final: bool = True) -> None:
        self.total, self.desc, self.noun, self.every, self.final = total, desc, noun, every, final
        self.file = file
        self.n, self._last, self._closed = 0, time.monotonic(), False

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(finished=exc[0] is None)

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._say()

    def close(self, finished: bool = True) -> None:
        if not self._closed and finished and self.final:
            self._say()
        self._closed = True

    def _say(self) -> None:
        self._last = time.monotonic()
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        print(f"{self.desc}: {count} {self.noun}", file=self.file or sys.stderr, flush=True)


def progress(total: int | None, desc: str, unit: str = "img", noun: str = "images", file: IO[Any] | None = None,
             lines: bool = True, final: bool = False, leave: bool = True):
    """A progress counter on ``file`` (default: stderr): tqdm's bar where that stream is a terminal, else a
    :class:`LineProgress` (``lines``) or nothing at all (a disabled tqdm; for output that must stay
    machine-readable). Either takes ``update(n)`` and ``close()`` and works as a context manager.

    Args:
        total: the count at the end (None: unknown).
        desc: what is counted, first on the line (``packing data/photos``).
        unit: tqdm's unit (``img``: ``12.3img/s``); ``noun``: the line's word (``images``).
        final: in a log, also one line at the end (``dataset pack``: the TUI's bar reads it).
        leave: in a terminal, leave the finished bar on screen.
    """
    file = sys.stderr if file is None else file
    if not is_terminal(file) and lines:
        return LineProgress(total, desc, noun=noun, file=file, final=final)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True, leave=leave,
                disable=not is_terminal(file))


WRITE_CHUNK = 8192
"""Characters per write of :func:`write_stdout`: no more than the stream's buffer (io.DEFAULT_BUFFER_SIZE)."""


def write_stdout(text: str) -> None:
    """Writes ``text`` (a command's whole output) to stdout in pieces of :data:`WRITE_CHUNK` characters.

    Why not one ``sys.stdout.write``: on CPython 3.11 a single write larger than the stream's buffer into a pipe
    whose reader stops (``lit-imgcls predict ... | head -1``) writes part of the text and then raises nothing; the
    rest is dropped and the command would exit 0. Written in pieces, the next piece meets the closed pipe and
    raises :class:`BrokenPipeError`, which :func:`lit_imgcls.cli.main` turns into exit 141 (128 + SIGPIPE).

    Raises:
        BrokenPipeError: the reader of stdout went away.
    """
    for start in range(0, len(text), WRITE_CHUNK):
        sys.stdout.write(text[start:start + WRITE_CHUNK])
    sys.stdout.flush()
