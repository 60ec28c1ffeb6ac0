"""Files lit-imgcls writes into a folder it shares with the user, replaced only while they are still ours.

``dataset pack --list`` writes ``train.lst``, ``val.lst``, ``test.lst`` and ``classes.txt`` into a folder that
may hold a user's own files of those names (an im2rec list written by hand or by im2rec); ``export --overwrite``
replaces a model file only while it is one ``export`` wrote there. Beside them it keeps a
record, a small JSON object naming each file it wrote and the sha256 of what it wrote::

    {"written_by": "lit-imgcls", "record_version": 1, "files": {"train.lst": ["<sha256>"], ...}}

A later run (:func:`write_owned`) replaces a file only when the record names it and its bytes still hash to what
was recorded (so a list the user has edited since is theirs again); refuses, before writing anything, a file of
the same name that is not ours, a link or anything but a regular file in its place, or a record it did not
write; and removes the files of ours that the new run no longer writes (a ``test.lst`` of an earlier
``--test-ratio``), again only while unchanged. Each file is written atomically (:mod:`lit_imgcls.io`), and the
record is written before the files with both the old and the new hash of each, then again with the new ones
only, so a run killed half way leaves every file still recognisable as ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from lit_imgcls.errors import UsageError
from lit_imgcls.io import atomic_write, atomic_write_text

RECORD_VERSION = 1
_MAX_RECORD_BYTES = 1 << 20  # a record names a handful of files: anything larger is not one of ours


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _kind(path: Path) -> str | None:
    """None for a regular file (or nothing there); else what is there instead, in words."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    return "a link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "a special file"


def read_record(folder: Path, record: str) -> dict[str, set[str]]:
    """What the record in ``folder`` says lit-imgcls wrote there: file name -> the sha256 digests it may have.

    Returns:
        An empty dict when there is no record.

    Raises:
        UsageError: something is there under the record's name that is not a record lit-imgcls wrote (a link,
            a folder, a file of other content, one cut short).
    """
    path = folder / record
    if not path.exists() and not path.is_symlink():
        return {}
    problem = _kind(path)
    data = None
    if problem is None:
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_RECORD_BYTES + 1)
            data = json.loads(raw) if len(raw) <= _MAX_RECORD_BYTES else None
        except (OSError, ValueError):
            data = None
    files = data.get("files") if isinstance(data, dict) and data.get("written_by") == "lit-imgcls" else None
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and _plain_name(name) and isinstance(digests, list)
            and all(isinstance(d, str) for d in digests) for name, digests in files.items()):
        raise UsageError(f"{path} is {problem or 'not a record lit-imgcls wrote'} (lit-imgcls keeps there the list "
                         f"of the files it wrote into {folder}): move it away, then rerun")
    return {name: set(digests) for name, digests in files.items()}


def _plain_name(name: str) -> bool:
    """A file name directly inside the folder: what a record names is never a path elsewhere."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def check_owned(folder: Path, names: list[str], record: str, elsewhere: str) -> dict[str, set[str]]:
    """Refuses, before anything is written, to replace a file of one of ``names`` in ``folder`` that is not ours
    and unchanged (see :func:`write_owned`); returns the record's contents.

    Args:
        elsewhere: what to do instead, in the caller's words ("write the lists into another folder").

    Raises:
        UsageError: a file of one of those names that the record does not show as ours and unchanged; a link,
            folder or special file in its place; a record lit-imgcls did not write; a name that is the record's.
    """
    old = read_record(folder, record)
    for name in names:
        path = folder / name
        if name == record:  # writing there would put the file in the record's place, and the record over it
            raise UsageError(f"{path} is the name of lit-imgcls's own record of the files it wrote in {folder}; "
                             f"{elsewhere}")
        kind = _kind(path)
        if kind is not None:
            raise UsageError(f"{path} is {kind}, not a file lit-imgcls wrote; move it away or {elsewhere}")
        if not path.exists():
            continue
        if name not in old:
            raise UsageError(f"{path} is not a file lit-imgcls wrote (its record {record} does not name it); "
                             f"move it away or {elsewhere}")
        if _sha256(path) not in old[name]:
            raise UsageError(f"{path} was changed since lit-imgcls wrote it; move it away (or delete it) if the "
                             f"changes can go, or {elsewhere}")
    return old


def write_owned(folder: Path, files: dict[str, str | bytes], record: str, prune: bool = True,
                elsewhere: str = "write the lists into another folder") -> list[Path]:
    """Writes ``files`` (name -> text or bytes) into ``folder``, replacing only files of ours, and (``prune``)
    removes files of ours the record names that ``files`` leaves out.

    Args:
        folder: an existing folder.
        files: plain file names (no folders) -> their whole text (UTF-8) or bytes.
        record: the record's file name in ``folder`` (a hidden name of the caller's).
        prune: remove the record's other files (a set written together, like ``--list``'s); False keeps them and
            their entries (files written one at a time, like ``export``'s).
        elsewhere: what to do instead of replacing a file that is not ours, in the caller's words.

    Returns:
        The paths written, in the order of ``files``.

    Raises:
        UsageError: (before anything is written) see :func:`check_owned`.
        OSError: the disk fails while writing (each file is then either its old or its new self).
    """
    old = check_owned(folder, list(files), record, elsewhere)
    data = {name: text.encode("utf-8") if isinstance(text, str) else bytes(text) for name, text in files.items()}
    new = {name: hashlib.sha256(blob).hexdigest() for name, blob in data.items()}
    # Ours from a run before that this one does not write: removed if unchanged, else left (theirs now).
    stale = [name for name in old if prune and name not in files and _plain_name(name) and _kind(folder / name) is None
             and (folder / name).exists() and _sha256(folder / name) in old[name]]
    kept = {} if prune else {name: sorted(digests) for name, digests in old.items() if name not in files}
    during = {**kept, **{name: sorted(old.get(name, set()) | {digest}) for name, digest in new.items()}}
    during.update({name: sorted(old[name]) for name in stale})
    _write_record(folder / record, during)
    written = []
    for name, blob in data.items():
        atomic_write(folder / name, lambda f, blob=blob: f.write(blob))
        written.append(folder / name)
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    _write_record(folder / record, {**kept, **{name: [digest] for name, digest in new.items()}})
    return written


def _write_record(path: Path, files: dict[str, list[str]]) -> None:
    atomic_write_text(path, json.dumps({"written_by": "lit-imgcls", "record_version": RECORD_VERSION,
                                        "files": files}, indent=1, sort_keys=True) + "\n")
