"""``fit --log-file FILE`` (MXNet's older tutorial): the lines the run prints on stdout, also appended to FILE."""

from __future__ import annotations

import contextlib
import sys
from typing import IO, Iterator, TextIO

from lit_imgcls.errors import UsageError


class _Tee:
    """A stdout that also appends each finished line to a file. A line's text before its last carriage return was
    overdrawn on a terminal (a progress bar's redraws), so the file gets what the terminal shows: the rest."""

    def __init__(self, stream: TextIO, file: IO[str]) -> None:
        self._stream, self._file, self._pending = stream, file, ""

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            self._file.write("".join(line.rsplit("\r", 1)[-1] + "\n" for line in lines))
            self._file.flush()  # line by line: a run that ends with os._exit keeps every line it printed
        return n

    def flush(self) -> None:
        self._stream.flush()

    def close_file(self) -> None:
        rest = self._pending.rsplit("\r", 1)[-1]
        if rest.strip():
            self._file.write(rest + "\n")
        self._file.close()

    def __getattr__(self, name: str):  # isatty, fileno, encoding...: the real stdout's
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee_stdout(path: str | None) -> Iterator[None]:
    """While in the block, what is printed on stdout is also appended to ``path`` (None: nothing is done).

    Raises:
        UsageError: ``path`` cannot be opened for appending (a missing folder, no permission).
    """
    if not path:
        yield
        return
    from lit_imgcls.userpaths import expand_path

    path = expand_path(path, "log_file")
    try:
        file = open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot append to --log-file {path}: {exc.strerror or exc}") from None
    tee = _Tee(sys.stdout, file)
    sys.stdout = tee  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = tee._stream
        tee.close_file()
