"""Reading data by URL: local paths, ``file://``, ``http(s)://`` and ``s3://`` (fsspec and s3fs), with an
optional local cache that trusts only files it wrote and proved against the manifest's sha256.

S3 credentials come from the usual AWS variables or files; ``AWS_ENDPOINT_URL`` points at another S3-compatible
server (MinIO, SeaweedFS, Ceph). Transient failures are retried by the client library (:mod:`lit_imgcls.storage`
sets fsspec's defaults: botocore's retries for S3); what still fails, opening or mid-read, is one line naming the
URL (:class:`~lit_imgcls.errors.RemoteUnavailable`, or a :class:`UsageError` for a missing or forbidden object).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from lit_imgcls.errors import UsageError
from lit_imgcls.stream_wrapper import StreamWrapper


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location[len("file://"):] if location.startswith("file://") else location).expanduser()


class RemoteFile(StreamWrapper):
    """An fsspec file whose read errors that outlast the client's retries name the URL in one line."""

    def __init__(self, raw: IO[bytes], url: str) -> None:
        super().__init__(raw)
        self.url = url

    def read(self, n: int = -1) -> bytes:
        from lit_imgcls.storage import failure

        try:
            return self.raw.read(n)
        except Exception as exc:  # noqa: BLE001 - a connection that died mid-object, 5xx, throttling
            raise failure("read", self.url, exc) from None

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001, S110 - closing a read-only object: nothing is lost
            pass


def open_url(url: str, timeout: float = 60.0, kind: str = "download", limit: int | None = None) -> IO[bytes]:
    """A readable binary stream for a local path or a remote URL (http(s) through urllib, others fsspec).

    Whatever it reads is cut at ``limit`` bytes (default ``LIMITS[kind]`` of :mod:`lit_imgcls.bounded_read`):
    reading past it raises :class:`~lit_imgcls.bounded_read.ReadRefused`, so a server that streams without end
    costs one line, not the machine's memory or disk. A local path must be a regular file (the same rule).

    Raises:
        ReadRefused: a local path that is not a regular file, or is over the bound; reading past the bound.
        UsageError: an s3:// or other URL whose filesystem package is missing, or that is not there or forbidden.
        RemoteUnavailable: its storage still fails (opening or reading) after the client's retries.
        OSError: an http(s) URL that cannot be opened (urllib's URLError, HTTPError, a timeout).
    """
    from lit_imgcls.bounded_read import bounded_stream, open_regular

    if not is_remote(url):
        path = local_path(url)
        return bounded_stream(open_regular(path, kind), kind, str(path), limit)
    if url.startswith(("http://", "https://")):
        import urllib.request

        return bounded_stream(urllib.request.urlopen(url, timeout=timeout), kind, url, limit)  # noqa: S310
    import fsspec

    from lit_imgcls.storage import configure, failure

    configure()
    try:
        raw = fsspec.open(url, "rb").open()
    except ImportError as exc:
        raise UsageError(f"reading {url} needs a filesystem package ({exc}); pip install s3fs for s3://") from None
    except Exception as exc:  # noqa: BLE001 - missing or forbidden: a UsageError; a server that does not answer
        raise failure("open", url, exc) from None
    return bounded_stream(RemoteFile(raw, url), kind, url, limit)


def read_bytes(url: str, kind: str = "download") -> bytes:
    """The bytes at ``url`` (:func:`open_url`), at most ``LIMITS[kind]`` of them."""
    with open_url(url, kind=kind) as f:
        return f.read()


RECORD_SUFFIX = ".lit-imgcls.json"


def cached_copy(url: str, cache_dir: str | Path, sha256: str, size: int) -> Path:
    """The file at ``url`` in ``cache_dir``, downloaded once and proven against the manifest's sha256 as it was
    written.

    A cached file is trusted only with the record this function writes beside it (``<file>.lit-imgcls.json``:
    the sha256 and size it proved, and the file's inode, size, mtime and ctime after the write); a file
    that changed since, or whose record names another hash, is downloaded again. One process at a time per
    file (a lock file ``<file>.lock``), so ranks and loader workers do not download the same shard twice.

    Raises:
        UsageError: a file of that name in the cache that lit-imgcls did not write (no record beside it; it is
            left as it is), or a download that fails or fails its sha256 check.
    """
    import json

    from filelock import FileLock

    from lit_imgcls.data.download import fetch

    cache = Path(cache_dir).expanduser()
    target = cache / f"{sha256[:16]}-{url.rstrip('/').rsplit('/', 1)[-1]}"
    record = target.with_name(target.name + RECORD_SUFFIX)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(target.with_name(target.name + ".lock")))
        lock.acquire()
    except OSError as exc:
        raise UsageError(f"data_cache {cache} cannot be written ({exc.strerror or exc}): choose another "
                         "--data-cache") from None
    try:
        want = {"sha256": sha256, "bytes": int(size)}
        if os.path.lexists(target):
            if not record.is_file():
                raise UsageError(f"data_cache {cache} holds {target.name}, which lit-imgcls did not write (no "
                                 f"{record.name} beside it): move it away or choose another --data-cache")
            try:
                held = json.loads(record.read_text())
            except (OSError, ValueError):
                held = {}
            if held == {**want, "stat": _identity(target)}:
                return target
            # Ours, but changed since we proved it (or left half way): it is downloaded again below.
        _write_record(record, {**want, "stat": None})  # claims the name before the file appears
        try:
            fetch(url, target, "sha256", sha256, limit=size)  # a longer stream is cut at the manifest's size
        except UsageError as exc:
            raise UsageError(f"shard {exc}") from None
        if target.stat().st_size != size:
            raise UsageError(f"shard {url} has {target.stat().st_size} bytes, the manifest says {size}")
        _write_record(record, {**want, "stat": _identity(target)})
        return target
    finally:
        lock.release()


def _identity(path: Path) -> list[int] | None:
    """What tells this file from a replaced or rewritten one without reading it: inode, size, mtime and ctime (ns;
    any write changes the ctime, and no user call can set it back)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    import stat

    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] if stat.S_ISREG(st.st_mode) else None


def _write_record(record: Path, data: dict) -> None:
    import json
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{record.name}.", suffix=".part", dir=record.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, record)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
