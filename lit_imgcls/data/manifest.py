"""The JSON manifest beside packed shards: classes, counts, checksums, options. Written last, read first.

Replacing a pack is made safe to kill (kill -9, a full disk, a power cut after the data reached the disk) by
the manifest being the commit point. A pack writes everything, its manifest included, into a hidden work folder
``OUT/.partial-<pid>``, then swaps (:func:`commit_pack`): the old manifest, then the old ``wds``/``ffcv``
folders move into ``<work>/old``; the new folders move in; the new manifest moves in last. Every step is one
rename. Killed anywhere before the last rename, ``OUT`` has no manifest (nothing looks valid) and ``<work>/old``
holds the complete old pack, which the next pack, or the next reader, puts back (:func:`recover`), as SQLite's
next reader rolls back a hot journal. A lock file (``OUT/.pack.lock``, a POSIX lock held by the packing process
alone, so released by its death whatever kills it; :mod:`lit_imgcls.locks`) tells a live pack from a dead one's
leftovers; the pack removes it when it ends.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lit_imgcls.data.classes import MAX_CLASSES  # one bound on a class count, for every format
from lit_imgcls.errors import UsageError, quoted
from lit_imgcls.locks import ProcessLock

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FORMATS = ("wds", "ffcv")
WORK_PREFIX = ".partial-"
LOCK = ".pack.lock"


def _our_manifest(manifest: Path) -> dict[str, Any] | None:
    """``manifest`` if it is a pack manifest lit-imgcls wrote (any version: a JSON object with its version fields)."""
    try:
        if not manifest.is_file() or manifest.stat().st_size > 64 * 2**20:
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "lit_imgcls_version" in data and "format_version" in data else None


def _listed_files(manifest: dict[str, Any]) -> dict[str, set[str]]:
    """The file names a manifest lists under each format folder."""
    listed: dict[str, set[str]] = {fmt: set() for fmt in FORMATS}
    splits = manifest.get("splits")
    for entry in (splits.values() if isinstance(splits, dict) else ()):
        for fmt in FORMATS:
            files = entry.get(fmt) if isinstance(entry, dict) else None
            for f in (files if isinstance(files, list) else [files]):
                if isinstance(f, dict) and isinstance(f.get("file"), str):  # "x.tar" for wds, "ffcv/x.beton" for ffcv
                    listed[fmt].add(f["file"].removeprefix(f"{fmt}/"))
    return listed


def foreign_entries(out: Path) -> list[str]:
    """What in ``out`` a pack would replace but lit-imgcls did not write. A pack swaps ``manifest.json``, ``wds/``
    and ``ffcv/`` whole, so it would delete: those entries in a folder that holds no lit-imgcls pack; beside our
    pack, a format folder its manifest does not list (``ffcv/`` beside a wds-only pack); inside its format
    folders, files its manifest does not name. A pack goes there only after the user moves them.

    Returns the entries (``ffcv``, ``wds/notes.txt``), sorted; empty when ``out`` is new, empty, a previous pack as
    written, one a killed pack left half swapped out (recovery puts it back), or holds only other files.
    """
    if not out.is_dir():
        return []
    if any(_our_manifest(w / "old" / MANIFEST) is not None for w in out.glob(f"{WORK_PREFIX}*")):
        return []
    present = [name for name in (MANIFEST, *FORMATS) if (out / name).exists() or (out / name).is_symlink()]
    manifest = _our_manifest(out / MANIFEST)
    if manifest is None:
        return sorted(present)
    formats = manifest.get("formats") if isinstance(manifest.get("formats"), list) else []
    listed = _listed_files(manifest)
    found = []
    for fmt in FORMATS:
        folder = out / fmt
        if fmt not in present:
            continue
        if fmt not in formats or folder.is_symlink() or not folder.is_dir():
            found.append(fmt)
            continue
        found += [f"{fmt}/{p.name}" for p in folder.iterdir() if p.name not in listed[fmt]]
    return sorted(found)


def manifest_path(out: str | Path) -> Path:
    p = Path(out)
    return p if p.name == MANIFEST else p / MANIFEST


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of a pack folder (or the manifest file itself); a missing or broken one is a clear error."""
    path = manifest_path(out)
    if not path.is_file() and any(path.parent.glob(f"{WORK_PREFIX}*/old/{MANIFEST}")):
        _put_back_old_pack(path.parent)
    if not path.is_file() and not os.path.lexists(path):  # a FIFO or a link loop: read_text says what it is
        raise UsageError(f"no {MANIFEST} in {path.parent}: not a finished pack (an interrupted pack leaves none)")
    from lit_imgcls.bounded_read import read_regular

    try:  # json.loads on bytes: a file that is not UTF-8 is damaged JSON like any other, with the re-pack hint
        data = json.loads(read_regular(path, "manifest"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({' '.join(str(exc).split())}): a damaged or cut-short "
                         "manifest; re-pack with `lit-imgcls dataset pack`") from None
    return check_manifest(data, str(path))


# ------------------------------------------------------------------------------------------- what it must hold

_SHARD_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.tar")
_BETON_FILE = re.compile(r"ffcv/[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.beton")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Bounds on what a manifest may claim: far above any real pack, far below what would make a reader allocate or
# loop without end (a manifest claiming 10**12 samples, a million shards or a 10**9-byte class name).
MAX_CLASS_NAME = 1000  # characters
MAX_SAMPLES = 10**10  # per split (and per file); the .beton check's bound too
MAX_FILE_BYTES = 2**44  # 16 TiB, per shard or .beton file
MAX_SHARDS = 1_000_000  # per split
MAX_SPLITS = 16
MAX_SIDE = 2**16  # pixels, an image side (FFCV stores sides as uint16)
TAR_SAMPLE_BYTES = 2048  # the least a sample takes in a tar shard: two members of a 512-byte header and block


def dataset_name(manifest: dict[str, Any], location: str) -> str:
    """The data set a pack was made from, as its manifest records it: the built-in data set (``mnist``,
    ``cifar10``), else the name of the source folder or list file (``data/photos`` -> ``photos``, ``train.lst`` ->
    ``train``), else the pack's own folder name. For naming runs; ``source`` is descriptive, so anything odd in it
    falls back to the folder's name."""
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    kind, src = source.get("kind"), source.get("src")
    if kind in ("mnist", "cifar10"):
        return kind
    name = ""
    if isinstance(src, str) and not re.match(r"^[a-z][a-z0-9+.-]*://", src):
        name = Path(src.rstrip("/")).name
        if kind in ("lst", "csv"):
            name = Path(name).stem
    return name or Path(location.rstrip("/")).name or "pack"


def check_manifest(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a manifest every reader can use, else a :class:`UsageError` naming the first bad field.

    Shard names must be plain file names: a manifest from elsewhere cannot point a reader outside its pack.
    """
    problem = _problem(data)
    if problem:
        raise UsageError(f"{where} is not a lit-imgcls pack manifest (format_version {FORMAT_VERSION}): {problem}; "
                         "re-pack with `lit-imgcls dataset pack`")
    return data


def _count(v: Any, most: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0 and (most is None or v <= most)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                      for x in v)


def _file_problem(entry: Any, where: str, pattern: re.Pattern) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} is not an object"
    if not isinstance(entry.get("file"), str) or not pattern.fullmatch(entry["file"]):
        return f"{where}.file {quoted(entry.get('file'))} is not a file name of the pack"
    if not _count(entry.get("samples"), MAX_SAMPLES):
        return f"{where}.samples is not a count from 0 to {MAX_SAMPLES}"
    if not _count(entry.get("bytes"), MAX_FILE_BYTES) or entry["bytes"] == 0:
        return f"{where}.bytes is not a size from 1 to {MAX_FILE_BYTES}"
    if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
        return f"{where}.sha256 is not 64 hex digits"
    return None


def _problem(m: Any) -> str | None:
    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    if m.get("format_version") != FORMAT_VERSION or type(m.get("format_version")) is not int:
        return f"format_version is {quoted(m.get('format_version'), 40)}"
    names = m.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "class_names is not a list of names"
    if len(names) > MAX_CLASSES:
        return f"class_names holds {len(names)} names, more than {MAX_CLASSES}"
    for i, n in enumerate(names):
        if not 0 < len(n) <= MAX_CLASS_NAME:
            return f"class_names[{i}] is {len(n)} characters long, not 1 to {MAX_CLASS_NAME}"
    formats = m.get("formats")
    if not isinstance(formats, list) or not formats or not all(isinstance(f, str) and f in FORMATS for f in formats):
        return f"formats is {quoted(formats)}, not a list of {' and '.join(FORMATS)}"
    channels = m.get("channels", 3)
    if isinstance(channels, bool) or channels not in (1, 3):
        return f"channels is {quoted(channels, 40)}, not 1 or 3"
    for key in ("mean", "std"):
        v = m.get(key, [0.5])
        if not _numbers(v) or len(v) not in (1, channels):
            return f"{key} is not a list of 1 or {channels} (channels) finite numbers"
        if key == "mean" and not all(0 <= x <= 1 for x in v):
            return "mean is not within [0, 1] (pixel values scaled to 0..1)"
        if key == "std" and not all(0 < x <= 1 for x in v):
            return "std is not within (0, 1] (a std of 0 would divide by zero)"
    for key in ("source", "options"):
        if not isinstance(m.get(key, {}), dict):
            return f"{key} is not an object"
    if not isinstance(m.get("skipped", []), list):
        return "skipped is not a list"
    if "duplicates" in m:  # optional: packs made before it was recorded have none
        problem = _duplicates_problem(m["duplicates"], len(names))
        if problem:
            return problem
    splits = m.get("splits")
    if not isinstance(splits, dict) or not splits:
        return "splits is not an object of splits"
    if len(splits) > MAX_SPLITS:
        return f"splits holds {len(splits)} splits, more than {MAX_SPLITS}"
    for split, entry in splits.items():
        if not _SPLIT.fullmatch(split):
            return f"splits has a split named {quoted(split, 40)}, not letters, digits, _ or - (at most 64)"
        where = f"splits.{split}"
        if not isinstance(entry, dict):
            return f"{where} is not an object"
        if not _count(entry.get("count"), MAX_SAMPLES):
            return f"{where}.count is not a count from 0 to {MAX_SAMPLES}"
        if entry["count"] == 0:
            # What a pack whose files were all unusable wrote before lit-imgcls refused it: read as a pack, it
            # would train or validate on nothing and report success.
            return f"{where} holds no sample (an empty split)"
        per = entry.get("per_class")
        if not isinstance(per, list) or len(per) != len(names) or not all(_count(n) for n in per):
            return f"{where}.per_class is not one count per class ({len(names)})"
        if sum(per) != entry["count"]:
            return f"{where}.per_class adds up to {sum(per)}, not its count {entry['count']}"
        size = entry.get("image_size", {"min": [1, 1], "max": [1, 1]})
        if not isinstance(size, dict) or not all(
                isinstance(size.get(k), list) and len(size[k]) == 2 and all(_count(x, MAX_SIDE) and x for x in size[k])
                for k in ("min", "max")):
            return f"{where}.image_size is not {{min: [width, height], max: [width, height]}} of sides 1 to {MAX_SIDE}"
        if not all(a <= b for a, b in zip(size["min"], size["max"])):
            return f"{where}.image_size.min {size['min']} is larger than its max {size['max']}"
        if "wds" in formats:
            shards = entry.get("wds")
            if not isinstance(shards, list) or len(shards) > MAX_SHARDS:
                return f"{where}.wds is not a list of at most {MAX_SHARDS} shards"
            for i, shard in enumerate(shards):
                problem = _file_problem(shard, f"{where}.wds[{i}]", _SHARD_FILE)
                if problem:
                    return problem
                if shard["samples"] * TAR_SAMPLE_BYTES > shard["bytes"]:
                    return (f"{where}.wds[{i}].samples {shard['samples']} do not fit in its {shard['bytes']} bytes "
                            f"(a sample takes at least {TAR_SAMPLE_BYTES})")
            if sum(shard["samples"] for shard in shards) != entry["count"]:
                return (f"{where}.wds holds {sum(shard['samples'] for shard in shards)} samples, not its count "
                        f"{entry['count']}")
        if "ffcv" in formats:
            problem = _file_problem(entry.get("ffcv"), f"{where}.ffcv", _BETON_FILE)
            if problem:
                return problem
            if entry["ffcv"]["samples"] != entry["count"]:
                return f"{where}.ffcv holds {entry['ffcv']['samples']} samples, not its count {entry['count']}"
    return None


# ------------------------------------------------------------------------------- replacing a pack, safe to kill


class PackLock(ProcessLock):
    """``OUT/.pack.lock``: the :class:`~lit_imgcls.locks.ProcessLock` of the process that writes into OUT (a pack,
    a ``--list``, or a reader putting back a pack a killed swap moved aside). Its worker processes do not hold it;
    it goes when that process goes, however it dies, so leftovers found while holding it are a dead pack's."""

    def __init__(self, out: str | Path) -> None:
        super().__init__(Path(out) / LOCK)


def _move(src: Path, dst: Path) -> None:
    """One step of a swap: an atomic rename (the seam where the fault tests kill the process)."""
    os.replace(src, dst)


def commit_pack(work: Path, out: Path, formats: list[str]) -> None:
    """Swaps the finished pack in ``work`` (its manifest included) for the one in ``out``; the caller holds the
    lock. Safe to kill at any point: see the module's doc."""
    old = work / "old"
    old.mkdir()
    if (out / MANIFEST).exists():
        _move(out / MANIFEST, old / MANIFEST)  # first: from here until the last step nothing looks valid
    for fmt in FORMATS:
        if (out / fmt).exists():
            _move(out / fmt, old / fmt)
        else:  # tells recovery that a folder of this name in OUT is the new pack's
            (old / f"{fmt}.absent").touch()
    for fmt in formats:
        _move(work / fmt, out / fmt)
    _move(work / MANIFEST, out / MANIFEST)  # the commit point
    _sync_folder(out)
    shutil.rmtree(work, ignore_errors=True)


def recover(out: Path) -> None:
    """With the lock held: puts back an old pack whose swap a killed pack left half done, and deletes the work
    folders of dead packs. Each step is a rename or a deletion that a rerun repeats, so it is itself safe to kill."""
    for work in sorted(out.glob(f"{WORK_PREFIX}*")):
        old = work / "old"
        if not (out / MANIFEST).exists() and (old / MANIFEST).exists():
            for fmt in FORMATS:
                kept, absent = old / fmt, old / f"{fmt}.absent"
                if kept.exists() or absent.exists():  # else the swap never reached it: OUT's folder is the old one
                    shutil.rmtree(out / fmt, ignore_errors=True)  # the new pack's, if the swap got that far
                    if kept.exists():
                        _move(kept, out / fmt)
                    absent.unlink(missing_ok=True)
            _move(old / MANIFEST, out / MANIFEST)
            _sync_folder(out)
        shutil.rmtree(work, ignore_errors=True)


def _put_back_old_pack(folder: Path) -> None:
    """A reader found a pack folder mid-swap: recover it if no pack is running, else say what is happening."""
    lock = PackLock(folder)
    try:
        held = lock.acquire()
    except OSError as exc:
        raise UsageError(f"an interrupted `dataset pack` left the previous pack of {folder} in "
                         f"{folder}/{WORK_PREFIX}*/old, and it cannot be put back from here ({exc.strerror}): "
                         "rerun the pack as a user who can write there") from None
    if not held:
        raise UsageError(f"{folder} is being re-packed right now (process {lock.holder()}): "
                         "its manifest is back when that pack finishes")
    try:
        recover(folder)
    finally:
        lock.release()


def _sync_folder(folder: Path) -> None:
    """Makes the renames in ``folder`` durable (a power cut after this keeps them)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the renames are still atomic
    finally:
        os.close(fd)


# ------------------------------------------------------------------ what a pack holds: checks that print warnings
#
# Shared by `dataset pack` (at the end of a pack) and `dataset inspect` (from the manifest or the shards), so both
# say the same thing about the same pack. Each returns the text of a warning, or nothing: callers add the
# "lit-imgcls: warning: " prefix.


def _duplicates_problem(d: Any, num_classes: int) -> str | None:
    """What is wrong with a manifest's optional ``duplicates`` (see :func:`summarise_duplicates`), or None."""
    if not isinstance(d, dict):
        return "duplicates is not an object"
    for key in ("groups", "copies", "label_conflicts"):
        if not _count(d.get(key, 0)):
            return f"duplicates.{key} is not a count"
    for key in ("within_split", "cross_split"):
        counts = d.get(key, {})
        if not isinstance(counts, dict) or not all(isinstance(k, str) and _count(n) for k, n in counts.items()):
            return f"duplicates.{key} is not an object of counts"
    examples = d.get("examples", [])
    if not isinstance(examples, list):
        return "duplicates.examples is not a list"
    for i, ex in enumerate(examples):
        where = f"duplicates.examples[{i}]"
        if not isinstance(ex, dict):
            return f"{where} is not an object"
        if not _count(ex.get("size")):
            return f"{where}.size is not a count"
        if not isinstance(ex.get("kinds", []), list) or not all(isinstance(k, str) for k in ex.get("kinds", [])):
            return f"{where}.kinds is not a list of names"
        samples = ex.get("samples")
        if not isinstance(samples, list):
            return f"{where}.samples is not a list"
        for j, s in enumerate(samples):
            if not isinstance(s, dict) or not isinstance(s.get("split"), str) or not isinstance(s.get("key"), str):
                return f"{where}.samples[{j}] is not an object with a split and a key"
            if not isinstance(s.get("label"), int) or isinstance(s.get("label"), bool):
                return f"{where}.samples[{j}].label is not an integer"
            if not 0 <= s["label"] < num_classes:
                return f"{where}.samples[{j}].label is not a class index in [0, {num_classes})"
            if not isinstance(s.get("path", ""), str):
                return f"{where}.samples[{j}].path is not a string"
    return None
