"""The part every read-side stream wrapper shares: what it wraps, ``readinto`` through its own ``read``, and the
wrapped stream's other attributes (headers, status, ``seekable()``) passed through."""

from __future__ import annotations

from typing import IO


class StreamWrapper:
    """A binary read stream over ``raw`` whose subclasses change only :meth:`read` (and :meth:`close`):
    :class:`lit_imgcls.bounded_read.BoundedStream` cuts at a byte limit, :class:`lit_imgcls.data.remote.RemoteFile`
    names the URL when a read fails."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)

    def readinto(self, buffer) -> int:
        # through read(), so a subclass's rule (a limit, an error naming the URL) holds for readinto too
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "StreamWrapper":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)
