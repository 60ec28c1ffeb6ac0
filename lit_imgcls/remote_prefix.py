"""A ``--model-prefix`` at a URL (``s3://bucket/model/mnist``): what is ours there, and one run at a time.

A local prefix is guarded by a POSIX lock beside it (:func:`lit_imgcls.checkpoints.prefix_held`). An object store
has no such thing: plain S3 offers no atomic lock that frees itself when its holder dies (a conditional PUT can
create an object once, but nothing removes it after a kill -9, and not every S3-compatible server has it). So:

- **One run at a time on this machine**: a :class:`~lit_imgcls.locks.ProcessLock` on a local file keyed by the
  URL (``~/.cache/lit-imgcls/prefix-locks/<sha256 of the URL>.lock``, or under ``LIT_IMGCLS_CACHE``), held by
  rank 0 for the whole run: a second run with the same URL here is refused at once, and a killed holder's lock
  is free at once.
- **Across machines**, the marker below names the run that last wrote there (host, pid, start) and whether it
  ended; a run that finds another machine's run not ended says so in one warning line and goes on (a run
  pre-empted on one node and resumed on another is the usual case, and cannot be told from a live one). Two
  machines writing one prefix at once are the user's to avoid.
- **Ours**: before anything is written, the run writes the marker object ``DIR/.NAME.lit-imgcls.json``
  (``{"written_by": "lit-imgcls", ...}``) beside the checkpoints. Objects with lit-imgcls's names
  (``NAME-0003.ckpt``, ``-step-N``, ``-stop``, their ``.sha256``, ``NAME-recipe.yaml``) and no marker were not
  written by lit-imgcls: such a prefix is refused (one line, exit 2) by every run, ``--overwrite`` included, and
  nothing is deleted or replaced. Objects of other names are never touched. A marker left alone (the run wrote
  nothing) is removed when the run ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from lit_imgcls.errors import RemoteUnavailable, UsageError
from lit_imgcls.printable import warn

MARKER_VERSION = 1
_MAX_MARKER_BYTES = 64 << 10


def lock_path(url: str) -> str:
    """The local lock file of the prefix ``url`` on this machine."""
    from lit_imgcls.data.download import default_cache

    return str(default_cache("prefix-locks") / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.lock")


def read_marker(url: str) -> dict | None:
    """The marker beside the prefix ``url``; None when there is none.

    Raises:
        UsageError: an object under the marker's name that lit-imgcls did not write.
        RemoteUnavailable: the storage does not answer.
    """
    from lit_imgcls.checkpoints import marker_path
    from lit_imgcls.storage import read_bytes

    where = marker_path(url)
    raw = read_bytes(where, limit=_MAX_MARKER_BYTES, missing_ok=True)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("written_by") != "lit-imgcls":
        raise UsageError(f"{where} is not a marker lit-imgcls wrote (it keeps there who writes the checkpoints of "
                         f"model_prefix {url}): move it away, or choose another --model-prefix")
    return data


def _marker(url: str, running: bool) -> bytes:
    return (json.dumps({"written_by": "lit-imgcls", "marker_version": MARKER_VERSION, "prefix": url,
                        "host": socket.gethostname(), "pid": os.getpid(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "running": running},
                       indent=1, sort_keys=True) + "\n").encode()


def claim(url: str) -> None:
    """Checks that what lit-imgcls's names name under ``url`` is ours, then writes the marker (running).

    Raises:
        UsageError: objects of our names without a marker (or a marker not ours); a prefix that cannot be
            written (no such bucket, no access, credentials missing), named with the reason.
        RemoteUnavailable: the storage does not answer.
    """
    from lit_imgcls.checkpoints import marker_path, our_names
    from lit_imgcls.storage import listing, write_bytes

    marker = read_marker(url)
    if marker is None:
        foreign = sorted(our_names(url, listing(url)))
        if foreign:
            shown = ", ".join(f.rpartition("/")[2] for f in foreign[:3]) + (f" and {len(foreign) - 3} more"
                                                                           if len(foreign) > 3 else "")
            raise UsageError(f"model_prefix {url} holds {len(foreign)} object(s) named as lit-imgcls names its "
                             f"checkpoints ({shown}) but no {marker_path(url).rpartition('/')[2]} marker, which "
                             "lit-imgcls writes before its first: lit-imgcls did not write them, and replaces or "
                             "deletes nothing it did not write; move them away, or choose another --model-prefix")
    elif marker.get("running") and marker.get("host") != socket.gethostname():
        warn(f"the marker of model_prefix {url} says a run on host {marker.get('host')!s:.80} (pid "
             f"{marker.get('pid')!s:.12}, started {marker.get('started')!s:.40}) writes there and has not ended; "
             "if it still runs, the two overwrite each other's checkpoints (an object store has no lock)")
    try:
        write_bytes(marker_path(url), _marker(url, running=True))
    except UsageError as exc:
        raise UsageError(f"model_prefix {url} cannot be written ({str(exc).split(': ', 1)[-1]}); check the bucket "
                         "and credentials, or choose another --model-prefix") from None


def release(url: str) -> None:
    """The run has ended: the marker says so, or goes when nothing of ours is left beside it. Best effort: a
    storage that fails now costs a stale ``running`` (one warning line for a run on another machine)."""
    from lit_imgcls.checkpoints import marker_path, our_names
    from lit_imgcls.storage import listing, remove, write_bytes

    try:
        if our_names(url, listing(url)):
            write_bytes(marker_path(url), _marker(url, running=False))
        else:
            remove(marker_path(url))
    except (UsageError, RemoteUnavailable) as exc:
        warn(f"could not update the marker of model_prefix {url}: {exc}")


@contextlib.contextmanager
def holding_remote(url: str) -> Iterator[None]:
    """Within: this process is the only run on this machine writing under ``url``, and everything of
    lit-imgcls's names there is ours (see the module's doc).

    Raises:
        UsageError: another process here holds it; objects there we did not write; a prefix we cannot write.
        RemoteUnavailable: the storage does not answer (after its client's retries).
    """
    from lit_imgcls.locks import holding

    lock = lock_path(url)
    try:
        Path(lock).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the lock folder {Path(lock).parent} for model_prefix {url}: "
                         f"{exc.strerror or exc}; set LIT_IMGCLS_CACHE to a writable folder") from None
    with holding(lock,
                 busy=lambda pid: (f"another lit-imgcls run (process {pid}) on this machine is writing checkpoints "
                                   f"under model_prefix {url} now: wait for it to end, or choose another "
                                   "--model-prefix"),
                 unwritable=lambda why: f"cannot lock model_prefix {url} ({lock}): {why}"):
        claim(url)
        storage_failed = False
        try:
            yield
        except RemoteUnavailable:
            storage_failed = True  # not again now: each try would wait out the client's retries
            raise
        finally:
            if not storage_failed:
                release(url)
