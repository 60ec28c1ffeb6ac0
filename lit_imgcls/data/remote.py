"""Reading data by URL: local paths, ``file://``, ``http(s)://`` and ``s3://`` (fsspec and s3fs), with an
optional local cache whose files are checked against the manifest's sha256 before use.

S3 credentials come from the usual AWS variables or files; ``AWS_ENDPOINT_URL`` points at another S3-compatible
server (MinIO, SeaweedFS, Ceph).
"""

from __future__ import annotations

import os
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


def open_url(url: str, timeout: float = 60.0) -> IO[bytes]:
    """A readable binary stream for a local path or a remote URL (http(s) through urllib, others fsspec)."""
    if not is_remote(url):
        return open(local_path(url), "rb")
    if url.startswith(("http://", "https://")):
        import urllib.request

        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310
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
    """The file at ``url`` in ``cache_dir``, downloaded once and checked against the manifest's sha256."""
    from lit_imgcls.data.download import fetch

    cache = Path(cache_dir).expanduser()
    target = cache / f"{sha256[:16]}-{url.rstrip('/').rsplit('/', 1)[-1]}"
    if target.is_file() and target.stat().st_size == size:
        return target
    try:
        return fetch(url, target, "sha256", sha256)
    except UsageError as exc:
        raise UsageError(f"shard {exc}") from None
