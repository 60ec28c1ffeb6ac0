"""Reading data by URL: local paths, ``file://``, ``http(s)://`` and ``s3://`` (fsspec and s3fs), with an
optional local cache whose files are checked against the manifest's sha256 before use.

S3 credentials come from the usual AWS variables or files; ``AWS_ENDPOINT_URL`` points at another S3-compatible
server (MinIO, SeaweedFS, Ceph).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO

from lit_imgcls.errors import UsageError


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location[len("file://"):] if location.startswith("file://") else location).expanduser()


def _options(url: str) -> dict:
    if url.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL"):
        return {"client_kwargs": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}}
    return {}


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream for a local path or a remote URL."""
    if not is_remote(url):
        return open(local_path(url), "rb")
    import fsspec

    try:
        return fsspec.open(url, "rb", **_options(url)).open()
    except ImportError as exc:
        raise UsageError(f"reading {url} needs a filesystem package ({exc}); pip install s3fs for s3://") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot open {url}: {exc}") from None


def read_bytes(url: str) -> bytes:
    with open_url(url) as f:
        return f.read()


def cached_copy(url: str, cache_dir: str | Path, sha256: str, size: int) -> Path:
    """The file at ``url`` in ``cache_dir``, downloaded once and checked; a corrupt copy is named and replaced."""
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{sha256[:16]}-{url.rstrip('/').rsplit('/', 1)[-1]}"
    if target.is_file() and target.stat().st_size == size:
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=cache)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open_url(url) as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise UsageError(f"shard {url} fails its sha256 check (got {digest.hexdigest()[:12]}..., manifest says {sha256[:12]}...): corrupt in storage or in transit")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
