"""Checkpoints at a URL: any filesystem fsspec reaches (``s3://``, ``gs://``, ``az://``, ... by their packages).

A local path (and a ``file://`` URL, which the recipe turns into one) keeps the writes of :mod:`lit_imgcls.io`:
a temporary file, fsync, rename. A URL goes through fsspec, the layer Lightning's own checkpoint IO
(``lightning.fabric.utilities.cloud_io``) uses, and is written as Lightning writes it: on object storage
(S3, GCS, Azure) one ``pipe`` of the whole bytes, which is a single PUT, or a multipart upload that the store
shows only once it is complete; elsewhere through a write that fsspec commits at the end of a transaction. An
object is therefore whole or absent, never cut short; the checksum object is written after it.

Transient failures (a connection refused or reset, a 5xx answer, throttling, a server restarting) are retried by
the client library itself: for S3, botocore's ``retries`` (``standard`` mode, 10 attempts with exponential
backoff, up to about two minutes of outage per request) set through fsspec's defaults for ``s3``
(:func:`configure`), under whatever the user set: ``AWS_MAX_ATTEMPTS``/``AWS_RETRY_MODE`` or ``max_attempts``/
``retry_mode`` in ``~/.aws/config``, or fsspec's own configuration (``FSSPEC_S3_*``, ``~/.config/fsspec``). s3fs
adds its own retries of dropped connections and cut reads. What still fails is :class:`RemoteUnavailable`: one
line naming the object.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lit_imgcls.errors import RemoteUnavailable, UsageError

if TYPE_CHECKING:
    from pathlib import Path

# fsspec protocols of object stores, written with one pipe() as Lightning's _atomic_save does.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}
# Not for checkpoints: read-only, or gone with the process.
_NOT_FOR_CHECKPOINTS = {"http", "https", "ftp", "github", "zip", "tar", "memory"}
S3_RETRIES = {"mode": "standard", "max_attempts": 10}

_configured = False


def is_url(location: str) -> bool:
    """A location fsspec reaches (``scheme://...``) that is not a local path (``file://`` is one)."""
    return "://" in str(location) and not str(location).startswith("file://")


def local(location: str) -> str:
    """A ``file://`` URL as the local path it names; anything else unchanged."""
    return str(location).removeprefix("file://")


def local_output(location: str | os.PathLike, flag: str, then: str) -> Path:
    """The local file a write flag (``--report``, ``--out``, ``--calibrated-out``) names, checked before any work.

    A ``file://`` URL is the local path it names (as for ``--model-prefix``), ``~`` is the home folder. An existing
    file where a folder of the path should be is refused here, so the later checks and writes see only folders.

    Returns:
        The path, a :class:`pathlib.Path`.

    Raises:
        UsageError: an empty name, a URL other than ``file://`` (``then`` says what to do instead), or a folder of
            the path that is a file (one line).
    """
    from pathlib import Path

    if not str(location).strip():  # "" would be the current folder, or a flag silently dropped by its caller
        raise UsageError(f"{flag} needs a file name, got {str(location)!r}")
    if is_url(str(location)):
        raise UsageError(f"{flag} must be a local file, got {location}; {then}")
    path = Path(local(str(location))).expanduser()
    for folder in reversed(path.parents):  # the outermost first: the one to move away
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{flag} {location}: {folder} is a file, not a folder; give a path in a folder")
    return path


def split(location: str) -> tuple[str, str]:
    """(folder, name) of a URL or a local path: ``s3://b/model/x`` -> (``s3://b/model``, ``x``)."""
    if is_url(location):
        folder, _, name = location.rstrip("/").rpartition("/")
        return folder, name
    return os.path.split(location)


def basename(location: str) -> str:
    return split(location)[1]


def configure() -> None:
    """fsspec's defaults for ``s3`` (once a process): the endpoint from ``AWS_ENDPOINT_URL`` (MinIO, SeaweedFS,
    Ceph) and botocore's retries; each only where neither the user's fsspec configuration nor botocore's
    (environment, ``~/.aws/config``) sets it. Every s3fs filesystem made afterwards gets them: our reads and
    writes, webdataset's shards, Lightning's checkpoint IO."""
    global _configured
    if _configured:
        return
    _configured = True
    import fsspec.config

    conf = fsspec.config.conf.setdefault("s3", {})
    client = dict(conf.get("client_kwargs") or {})
    if os.environ.get("AWS_ENDPOINT_URL") and "endpoint_url" not in client and "endpoint_url" not in conf:
        client["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        conf["client_kwargs"] = client
    config = dict(conf.get("config_kwargs") or {})
    if "retries" not in config and not _botocore_sets_retries():
        config["retries"] = dict(S3_RETRIES)
        conf["config_kwargs"] = config


def _botocore_sets_retries() -> bool:
    """The user chose botocore's retries (``AWS_MAX_ATTEMPTS``, ``AWS_RETRY_MODE``, or the profile's config)."""
    if os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE"):
        return True
    try:
        import botocore.session

        scoped = botocore.session.get_session().get_scoped_config()
    except Exception:  # noqa: BLE001 - no botocore (no s3fs either), or a profile that does not exist
        return False
    return "max_attempts" in scoped or "retry_mode" in scoped


def check_location(url: str, key: str) -> None:
    """A URL a run can keep checkpoints at: a scheme fsspec knows, its package installed, a name at its end.

    Raises:
        UsageError: naming ``key`` and what to do.
    """
    import fsspec

    scheme = url.split("://", 1)[0].lower()
    if scheme in _NOT_FOR_CHECKPOINTS:
        raise UsageError(f"{key} {url}: checkpoints cannot be kept at a {scheme}:// URL (it cannot be written, "
                         "or not beyond this process); use a local path, s3://, gs:// or az://")
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        raise UsageError(f"{key} {url} needs the filesystem package of {scheme}:// ({exc}); e.g. pip install "
                         "s3fs for s3://, gcsfs for gs://, adlfs for az://") from None
    except ValueError:
        raise UsageError(f"{key} {url}: fsspec knows no filesystem {scheme}://; use a local path or a URL such as "
                         "s3://bucket/folder/name") from None
    rest = url.split("://", 1)[1]
    folder, _, name = rest.rpartition("/")
    if not folder or not name or name in (".", ".."):
        raise UsageError(f"{key} {url} must end in a name below a bucket or folder, like {scheme}://bucket/model/mnist "
                         "(checkpoints are NAME-0001.ckpt, ... beside it)")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it (as Lightning's ``cloud_io.get_filesystem`` finds it).

    Raises:
        UsageError: no filesystem package for the scheme, or options it refuses.
    """
    configure()
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise UsageError(f"{url} needs a filesystem package ({exc}); pip install s3fs for s3://") from None
    except ValueError as exc:
        raise UsageError(f"cannot reach {url}: {exc}") from None


def reason(exc: BaseException) -> str:
    """What went wrong, in one short line (a botocore message may span lines and hold the whole request)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def is_permanent(exc: BaseException) -> bool:
    """Errors no retry cures (no such object or bucket, access denied, a bad name): the user's to fix."""
    return (isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError,
                             UsageError))
            or "Credentials" in type(exc).__name__ or type(exc).__name__ == "ProfileNotFound")


def failure(what: str, url: str, exc: BaseException) -> Exception:
    """The one-line error for ``what`` (``read``, ``write``, ``list``) of ``url`` failing with ``exc``."""
    if is_permanent(exc):
        return UsageError(f"cannot {what} {url}: {reason(exc)}")
    return RemoteUnavailable(f"cannot {what} {url}: {reason(exc)} (still failing after the storage client's "
                             "retries)")


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    try:
        return bool(fs.isfile(path))
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001 - a server that does not answer: one line, not a traceback
        raise failure("look up", url, exc) from None


def read_bytes(url: str, limit: int | None = None, missing_ok: bool = False) -> bytes | None:
    """The whole object at ``url`` (one GET); more than ``limit`` bytes is refused.

    Returns:
        The bytes; None for an object that is not there, with ``missing_ok``.

    Raises:
        UsageError: no such object, no access, or over ``limit``.
        RemoteUnavailable: the storage still fails after its client's retries.
    """
    fs, path = filesystem(url)
    try:
        data = fs.cat_file(path) if limit is None else fs.cat_file(path, start=0, end=limit + 1)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UsageError(f"{url} is not there") from None
    except Exception as exc:  # noqa: BLE001
        raise failure("read", url, exc) from None
    if limit is not None and len(data) > limit:
        raise UsageError(f"{url} holds more than {limit:,} bytes; at most that many are read")
    return data


def write_bytes(url: str, data: bytes | memoryview) -> None:
    """Writes ``data`` as the object at ``url``, whole or not at all (see the module's doc).

    Raises:
        UsageError: no access, no such bucket.
        RemoteUnavailable: the storage still fails after its client's retries.
    """
    fs, path = filesystem(url)
    try:
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if _OBJECT_STORES & set(protocols):
            fs.pipe_file(path, bytes(data))
        else:
            folder = path.rpartition("/")[0]
            if folder:
                fs.makedirs(folder, exist_ok=True)
            with fs.transaction, fs.open(path, "wb") as f:
                f.write(data)
    except Exception as exc:  # noqa: BLE001
        raise failure("write", url, exc) from None


def remove(url: str) -> None:
    """Deletes the object at ``url``; one that is not there is fine."""
    fs, path = filesystem(url)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise failure("delete", url, exc) from None


def listing(prefix: str) -> dict[str, int]:
    """Objects beside ``prefix`` (in its folder) whose names start with its name: URL -> time written (ns).

    One listing request, never a cached one (another process may have written since). Object stores keep
    whole seconds: callers break ties by kind and name (:func:`lit_imgcls.checkpoints.saved_checkpoints`).
    """
    folder, name = split(prefix)
    fs, path = filesystem(folder)
    try:
        fs.invalidate_cache(path)
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001
        raise failure("list", folder, exc) from None
    found = {}
    for info in entries:
        if info.get("type") not in (None, "file"):
            continue
        entry = str(info["name"]).rstrip("/").rpartition("/")[2]
        if entry.startswith(name):
            found[f"{folder}/{entry}"] = _mtime_ns(fs, info)
    return found


def _mtime_ns(fs: Any, info: dict) -> int:
    from datetime import datetime

    for key in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(value * 1e9)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                pass
    try:
        return int(fs.modified(info["name"]).timestamp() * 1e9)
    except Exception:  # noqa: BLE001 - a filesystem that keeps no times: order by kind and name alone
        return 0
