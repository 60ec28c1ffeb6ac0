"""`dataset pack`: list, shuffle, split, check and encode images, write shards and a manifest (im2rec's successor).

Everything is written into a hidden work folder inside OUT and swapped into place at the end, the manifest last
(:func:`lit_imgcls.data.manifest.commit_pack`): an interrupted pack (Ctrl-C, kill -9, full disk) leaves either
no manifest, so nothing that looks valid, or the previous pack, complete; a rerun puts back what a killed swap
moved aside and deletes the leftovers of every earlier run, so at most one work folder is ever left behind.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from lit_imgcls import __version__
from lit_imgcls.data.encode import EncodeOptions, Encoded, encode_array, encode_file
from lit_imgcls.data.formats.tar_shards import TarShardWriter, parse_shard_size
from lit_imgcls.data.manifest import (FORMAT_VERSION, MANIFEST, WORK_PREFIX, PackLock, commit_pack, foreign_entries,
                                      recover)
from lit_imgcls.data.pack_report import (duplicate_warnings, missing_class_warnings, summarise_duplicates,
                                         unshuffled_warning)
from lit_imgcls.data.sources import Item, Source, open_source
from lit_imgcls.errors import DISK_ERRORS, RunFailed, UsageError
from lit_imgcls.io import atomic_write_text
from lit_imgcls.owned_files import write_owned
from lit_imgcls.printable import warn
from lit_imgcls.terminal import progress

SPLITS = ("train", "val", "test")
LISTS_RECORD = ".lit-imgcls-lists"  # what --list wrote into its folder (lit_imgcls.owned_files)


@dataclass
class PackOptions:
    format: str = "wds"
    shuffle: bool = True
    seed: int = 0
    train_ratio: float = 1.0
    test_ratio: float = 0.0
    shard_size: str = "10000"
    num_workers: int = 1


_RATIO_EPS = 1e-9  # 0.7 + 0.2 + 0.1 is not exactly 1 in floating point


def split_items(source: Source, opts: PackOptions) -> dict[str, list[Item]]:
    """Shuffled (unless told not to) and split by ratio; built-in datasets keep their official splits.

    A split that the ratios ask for (a share above 0; val gets the rest) but that rounds to no sample is an
    error, not a pack or a list without it: `--train-ratio 0.9` of 3 images would otherwise silently give no
    val split. A source with no sample at all is left to the caller, which says why.

    Raises:
        UsageError: the ratios add up to more than 1; a split they ask for would be empty.
    """
    rng = random.Random(opts.seed)
    if source.splits is not None:
        splits = {k: list(v) for k, v in source.splits.items()}
        if opts.shuffle:
            for items in splits.values():
                rng.shuffle(items)
        return splits
    if opts.train_ratio + opts.test_ratio > 1 + _RATIO_EPS:
        raise UsageError(f"--train-ratio {opts.train_ratio:g} and --test-ratio {opts.test_ratio:g} add up to more "
                         "than 1 (val gets the rest)")
    items = list(source.items)
    if opts.shuffle:
        rng.shuffle(items)
    n = len(items)
    n_train = int(round(n * opts.train_ratio))
    n_test = min(int(round(n * opts.test_ratio)), n - n_train)  # two halves of an odd count both round up
    splits = {"train": items[:n_train], "test": items[n_train : n_train + n_test], "val": items[n_train + n_test :]}
    shares = {"train": opts.train_ratio, "test": opts.test_ratio, "val": 1 - opts.train_ratio - opts.test_ratio}
    for split in ("train", "val", "test") if n else ():
        if shares[split] > _RATIO_EPS and not splits[split]:
            fix = {"train": "raise --train-ratio, or give --train-ratio 0 for no train split",
                   "test": "raise --test-ratio, or leave it at 0 for no test split",
                   "val": "lower --train-ratio or --test-ratio, or make them add up to 1 for no val split"}[split]
            raise UsageError(f"the {split} split would be empty: its share ({shares[split]:g}) of the {n} samples "
                             f"rounds to none; give more samples, or {fix}")
    return splits


def write_lists(out: Path, splits: dict[str, list[Item]], class_names: list[str] | None = None,
                root: str | os.PathLike | None = None) -> list[Path]:
    """im2rec's --list: ``index<TAB>label<TAB>path`` files, one per non-empty split, and the class map.

    im2rec's rule: the paths in a list are relative to the root folder named on the command line, when the list
    is written and when it is read. Here that folder is ``root`` (``--root``) and, without one, the folder the
    lists are written to, ``out``, which is also where the reader looks when not given ``--root``: so
    ``dataset pack OUT/train.lst`` finds the images with no --root from any working folder, and lists written
    with ``--root R`` are read with ``--root R`` (as lists written by im2rec itself are). A path with no relative
    form (another drive on Windows) is written absolute. The class names go to ``OUT/classes.txt`` (line ``i``
    names label ``i``), which the .lst reader picks up from a list's folder: without it a re-pack of the lists
    would name its classes "0", "1", ... Every check comes before the first write; each file is written
    atomically. A list or classes.txt already in ``out`` is replaced only if lit-imgcls wrote it there and it is
    unchanged since, and lists of an earlier run that this one does not write are removed on the same terms
    (:mod:`lit_imgcls.owned_files`, with the record ``OUT/.lit-imgcls-lists``). Warns (stderr) when val or test
    lacks a class that train has.

    Raises:
        UsageError: a split has items without a file (built-in datasets); a class name a line cannot hold; a
            split left with no listable file; a file of a list's name that lit-imgcls did not write, or that was
            changed since.
    """
    base = os.path.abspath(root if root is not None else out)
    for split, items in splits.items():
        if items and any(it.path is None for it in items):
            raise UsageError("--list needs a folder, .lst or .csv source (built-in datasets have no files to list)")
    if class_names is not None:
        bad = next((n for n in class_names if not n.strip() or "\n" in n or "\r" in n), None)
        if bad is not None:
            raise UsageError(f"class name {bad!r} cannot be written to classes.txt (one name a line: a name must "
                             "have a visible character and no line break)")
    unlistable = [it.path for items in splits.values() for it in items if any(c in it.path for c in "\t\n\r")]
    if unlistable:
        # A .lst line is index<TAB>label<TAB>path: such a name would split the line, and its image would be lost.
        warn(f"{len(unlistable)} files have a tab or line break in their name, which a .lst line cannot hold, and "
             f"are left out of the lists (e.g. {unlistable[0]!r}); rename them to list them")
        drop = set(unlistable)
        emptied = [s for s, items in splits.items() if items and all(it.path in drop for it in items)]
        if emptied:
            raise UsageError(f"the {emptied[0]} split would be an empty list: none of its files has a name a .lst "
                             "line can hold (no tab or line break); rename them")
        splits = {s: [it for it in items if it.path not in drop] for s, items in splits.items()}
    texts = {}
    if class_names is not None:
        texts["classes.txt"] = "".join(f"{n}\n" for n in class_names)
    for split, items in splits.items():
        if items:
            texts[f"{split}.lst"] = "".join(f"{i}\t{it.label}\t{_list_path(it.path, base)}\n"
                                            for i, it in enumerate(items))
    written = write_owned(out, texts, LISTS_RECORD)
    if class_names is not None:
        per_split = {}
        for split, items in splits.items():
            per = [0] * len(class_names)
            for it in items:
                if 0 <= it.label < len(per):
                    per[it.label] += 1
            per_split[split] = {"count": len(items), "per_class": per}
        for warning in missing_class_warnings(per_split, class_names):
            warn(warning)
    return written


def _first_missing(folder: Path) -> Path | None:
    """The topmost of ``folder`` and its parents that does not exist yet (what ``mkdir -p`` would make), or None."""
    missing = None
    for f in (folder, *folder.parents):
        if f.exists() or f.is_symlink():
            break
        missing = f
    return missing


def _remove_made(folder: Path, made: Path | None) -> None:
    """Removes the folders from ``folder`` up to ``made`` that a failed pack made, as long as they are empty."""
    if made is None:
        return
    for f in (folder, *folder.parents):
        try:
            f.rmdir()
        except OSError:  # not empty (someone else's file), or gone: leave the rest
            return
        if f == made:
            return


def _nothing_to_pack(src: str, source: Source, total: int, skipped: list[dict], root: str | None) -> str:
    """The one line for a pack, or a list, that would hold no sample."""
    example = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
    if not total and source.kind == "folder":
        example = (f": its class folders ({', '.join(source.class_names[:4])}) hold no images directly; is "
                   "it one level too high, or do the images sit in sub-folders (--recursive)?")
    if source.kind in ("lst", "csv") and any("No such file" in row["reason"] for row in skipped):
        base = root if root is not None else (os.path.dirname(src) or ".")
        whence = "--root" if root is not None else "the list's own folder; give --root for another"
        example += f"; its paths are read relative to {base} ({whence})"
    return f"nothing to pack: {src} lists {total} images and none can be used{example}"


def _list_path(path: str, base: str) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), base)
    except ValueError:  # another drive (Windows): no relative path exists
        return os.path.abspath(path)


# Worker-process state: the options and, for built-in datasets, the arrays (shared by fork, not pickled per item).
_WORKER: dict = {}


def _init_worker(opts: EncodeOptions, arrays: dict) -> None:
    _WORKER["opts"], _WORKER["arrays"] = opts, arrays


class _Parent:
    """The pack process, as its worker processes see it (an object for multiprocessing's after-fork registry)."""

    def __init__(self) -> None:
        self.pid = os.getpid()


def _die_with_parent(parent: _Parent) -> None:
    """Runs in every worker process a pack starts (its encoding pool, FFCV's writers): SIGKILL when the pack
    process dies. Without it a pack killed with kill -9 leaves its pool workers blocked on a queue nobody
    feeds, forever, one set per kill."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no such call here
        return
    if os.getppid() != parent.pid:  # the pack died between the fork and the prctl
        os._exit(1)


@contextlib.contextmanager
def _workers_die_with_this_process():
    """Within: every process multiprocessing forks from this one gets SIGKILL when this one dies."""
    parent = _Parent()
    if sys.platform.startswith("linux"):
        from multiprocessing.util import register_after_fork

        register_after_fork(parent, _die_with_parent)
    yield
    # The registry holds `parent` weakly: when it goes, later forks of a process that called pack_dataset (a
    # test run, a notebook) are left alone.
    del parent


def _encode(job: tuple[str, int, Item]) -> tuple[str, int, Item, Encoded]:
    split, n, item = job
    opts = _WORKER["opts"]
    if item.path is not None:
        return split, n, item, encode_file(item.path, opts)
    return split, n, item, encode_array(_WORKER["arrays"][split][item.index], opts)


def _jobs(splits: dict[str, list[Item]]) -> Iterator[tuple[str, int, Item]]:
    for split in SPLITS:
        for n, item in enumerate(splits.get(split, [])):
            yield split, n, item


def pack_dataset(src: str, out: str, opts: PackOptions, enc: EncodeOptions, root: str | None = None,
                 recursive: bool = False, exts: tuple[str, ...] = (), data_dir: str | None = None,
                 list_only: bool = False) -> dict:
    """Packs ``src`` into ``out``; returns the manifest (also written to ``out/manifest.json``)."""
    from lit_imgcls.data.sources import DEFAULT_EXTS

    parse_shard_size(opts.shard_size)  # a bad --shard-size fails before any work
    if opts.format not in ("wds", "ffcv", "both"):
        raise UsageError(f"format must be wds, ffcv or both, got {opts.format!r}")
    if not (0 <= opts.train_ratio <= 1 and 0 <= opts.test_ratio <= 1):
        raise UsageError("train_ratio and test_ratio must lie in [0, 1]")
    if opts.format in ("ffcv", "both"):
        try:
            import ffcv  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"format {opts.format} needs FFCV, which does not import here ({exc}); use --format wds") from None
    source = open_source(src, root=root, recursive=recursive, exts=tuple(exts) or DEFAULT_EXTS, data_dir=data_dir)
    if root is not None and source.kind not in ("lst", "csv") and not list_only:
        raise UsageError(f"--root names the folder that the paths of a .lst or .csv source are relative to (and, "
                         f"with --list, the folder the written paths are relative to); {src} is a {source.kind} "
                         "source, which has no such paths: leave --root out")
    if source.kind in ("mnist", "cifar10") and enc.encoding == ".jpg" and not enc.pass_through:
        enc.encoding = ".png"  # exact pixels: these are tiny, and their benchmarks assume the original values
    splits = split_items(source, opts)  # before OUT is touched: a wrong ratio leaves nothing behind
    if not any(splits.values()):
        raise UsageError(_nothing_to_pack(src, source, 0, list(source.skipped), root))
    out_dir = Path(out).expanduser()
    made = _first_missing(out_dir)  # the topmost folder this pack creates, removed again if it fails
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"cannot make the output folder {out_dir}: it is an existing file (or a file is in its "
                         "path); OUT is a folder, new or one holding a previous pack: give another path") from None
    except OSError as exc:
        raise UsageError(f"cannot make the output folder {out_dir}: {exc.strerror or exc}") from None
    if not opts.shuffle and not list_only:
        print("lit-imgcls: warning: --no-shuffle packs samples in source order (often sorted by class); training "
              "from such a pack sees one class at a time and can stay at chance accuracy for whole epochs",
              file=sys.stderr)

    lock = PackLock(out_dir)
    try:
        held = lock.acquire()
    except OSError as exc:
        _remove_made(out_dir, made)
        raise UsageError(f"cannot write into {out_dir}: {exc.strerror}") from None
    if not held:
        raise UsageError(f"another `lit-imgcls dataset pack` (process {lock.holder()}) is writing into {out_dir} now: "
                         "wait for it to finish, or pack into another folder")
    # From here on every ending (success, refusal, error, Ctrl-C) releases the lock and removes its file; a failed
    # pack also removes the folders it made, so it leaves OUT as it found it.
    failed = True
    try:
        if list_only:
            with _disk_errors_said(f"the lists into {out_dir}", "the lists there before are intact"):
                lists = write_lists(out_dir, splits, source.class_names, root)
            failed = False
            return {"lists": [str(p) for p in lists]}
        foreign = foreign_entries(out_dir)  # with the lock held: no pack of ours is half way through a swap
        if foreign:
            shown = ", ".join(f"{n}/" if (out_dir / n).is_dir() else n for n in foreign[:5])
            shown += f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise UsageError(f"{out_dir} holds {shown}, which no lit-imgcls pack wrote, and a pack replaces exactly "
                             "those: pack into a new or empty folder, or move them out first")
        had_pack = (out_dir / MANIFEST).exists()
        with _disk_errors_said(f"the pack into {out_dir}", "the previous pack there is intact" if had_pack else
                               "nothing of it was left there"):
            manifest, labels_in_order = _pack_into(out_dir, src, source, splits, opts, enc, root, recursive)
        failed = False
    finally:
        lock.release()
        if failed:
            _remove_made(out_dir, made)
    for split, labels in labels_in_order.items():
        warning = unshuffled_warning(labels, source.class_names) if labels else None
        if warning and opts.shuffle:  # with --no-shuffle the warning came first, with the reason
            warn(f"{split}: {warning}")
    for warning in (missing_class_warnings(manifest["splits"], source.class_names)
                    + duplicate_warnings(manifest["duplicates"], source.class_names)):
        warn(warning)
    return manifest


def _pack_into(out_dir: Path, src: str, source: Source, splits: dict[str, list[Item]], opts: PackOptions,
               enc: EncodeOptions, root: str | None, recursive: bool) -> tuple[dict, dict[str, list[int]]]:
    """With OUT's lock held: writes the pack into a work folder inside ``out_dir`` and swaps it in (the module's
    doc); on any failure the work folder goes and a previous pack stays, or is put back, whole."""
    recover(out_dir)  # what killed runs left: an old pack half swapped out is put back, work folders go
    work = out_dir / f"{WORK_PREFIX}{os.getpid()}"
    try:
        work.mkdir()
        with _workers_die_with_this_process():
            manifest, labels_in_order = _write_pack(work, src, source, splits, opts, enc, root, recursive)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        commit_pack(work, out_dir, manifest["formats"])
    except BaseException:  # Ctrl-C or a disk error mid-swap: the old pack, moved into work, goes back
        recover(out_dir)
        raise
    return manifest, labels_in_order


@contextlib.contextmanager
def _disk_errors_said(what: str, intact: str):
    """Within: a full disk (or a quota, a read-only mount; :data:`~lit_imgcls.errors.DISK_ERRORS`) ends the
    command with one line, exit 1 (:class:`RunFailed`), saying what is intact; the caller has cleaned up."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        raise RunFailed(f"cannot write {what}: {exc.strerror or exc}; {intact}, and no temporary file of this run "
                        "is left; free space (or fix the folder's permissions), then rerun") from None


def _write_pack(work: Path, src: str, source: Source, splits: dict[str, list[Item]], opts: PackOptions,
                enc: EncodeOptions, root: str | None, recursive: bool) -> tuple[dict, dict[str, list[int]]]:
    """Encodes and writes the whole pack into ``work``, its manifest last; returns the manifest and each split's
    labels in storage order."""
    max_samples, max_bytes = parse_shard_size(opts.shard_size)
    writers = {s: TarShardWriter(work / "wds", s, max_samples, max_bytes) for s in SPLITS if splits.get(s)}
    per_class = {s: [0] * len(source.class_names) for s in SPLITS}
    labels_in_order: dict[str, list[int]] = {s: [] for s in SPLITS}
    skipped = list(source.skipped)
    first_bad: dict[str, dict] = {}  # per split, the first sample that could not be used
    sizes: dict[str, list[int]] = {}  # per split: min width, min height, max width, max height
    # For finding byte-identical images: the sha256 of every stored image, its split and its place in that split,
    # kept compact (about 50 bytes a sample) so a pack of millions can afford it. Identical sources give
    # identical stored bytes (encoding is deterministic), so this also finds copies under other names.
    digests, dig_split, dig_n, dig_label = bytearray(), bytearray(), array("q"), array("q")
    total = sum(len(v) for v in splits.values())
    # Results come back in submission order (imap), so storage order is the shuffled order.
    ctx = mp.get_context("fork")
    pool = ctx.Pool(max(1, opts.num_workers), _init_worker, (enc, source.arrays)) if opts.num_workers > 1 else None
    try:
        if pool is None:
            _init_worker(enc, source.arrays)
            results = map(_encode, _jobs(splits))
        else:
            results = pool.imap(_encode, _jobs(splits), chunksize=16)
        with progress(total, f"packing {src}", final=True) as bar:  # the TUI reads the last line
            for split, n, item, res in results:
                bar.update(1)
                where = item.path if item.path is not None else f"{source.kind}[{split}][{item.index}]"
                if res.error:
                    skipped.append({"path": where, "reason": res.error})
                    first_bad.setdefault(split, skipped[-1])
                    continue
                if not 0 <= item.label < len(source.class_names):
                    skipped.append({"path": where, "reason": f"label {item.label} outside 0..{len(source.class_names) - 1}"})
                    first_bad.setdefault(split, skipped[-1])
                    continue
                writers[split].write(f"{split}{n:08d}", res.data, res.ext, item.label)
                digests += hashlib.sha256(res.data).digest()
                dig_split.append(SPLITS.index(split))
                dig_n.append(n)
                dig_label.append(item.label)
                per_class[split][item.label] += 1
                labels_in_order[split].append(item.label)
                lo_hi = sizes.setdefault(split, [res.width, res.height, res.width, res.height])
                lo_hi[:] = [min(lo_hi[0], res.width), min(lo_hi[1], res.height), max(lo_hi[2], res.width), max(lo_hi[3], res.height)]
        if not any(labels_in_order.values()):
            # Nothing usable: a pack of zero samples would "succeed" and then train nothing.
            raise UsageError(_nothing_to_pack(src, source, total, skipped, root))
        empty = [s for s in SPLITS if splits.get(s) and not labels_in_order[s]]
        if empty:
            # One split with nothing usable is the same lie for that split: `fit` would validate on nothing.
            s = empty[0]
            bad = first_bad[s]
            raise UsageError(f"nothing to pack in the {s} split: its {len(splits[s])} images all fail (e.g. "
                             f"{bad['path']}: {bad['reason']}); fix or remove them, or change the split ratios")
        shards = {s: w.finish() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()

    manifest: dict = {
        "format_version": FORMAT_VERSION,
        "lit_imgcls_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"src": src, "kind": source.kind, "root": root},
        "options": {**asdict(opts), **asdict(enc), "recursive": recursive},
        "class_names": source.class_names,
        "channels": source.channels,
        # What loaders normalise with: the card's statistics for built-in datasets, ImageNet's for photos.
        "mean": source.mean,
        "std": source.std,
        "formats": [f for f in ("wds", "ffcv") if opts.format in (f, "both")],
        "splits": {},
        "skipped": skipped,
    }

    def describe(i: int) -> dict:
        split, n = SPLITS[dig_split[i]], dig_n[i]
        item = splits[split][n]
        where = item.path if item.path is not None else f"{source.kind}[{split}][{item.index}]"
        return {"split": split, "key": f"{split}{n:08d}", "label": dig_label[i], "path": where}

    manifest["duplicates"] = summarise_duplicates(bytes(digests), dig_split, SPLITS, dig_label, describe)
    for split, infos in shards.items():
        entry = {"count": sum(i.samples for i in infos), "per_class": per_class[split]}
        if opts.format in ("wds", "both"):
            entry["wds"] = [asdict(i) for i in infos]
        if split in sizes:
            entry["image_size"] = {"min": sizes[split][:2], "max": sizes[split][2:]}  # width, height
        manifest["splits"][split] = entry
    if opts.format in ("ffcv", "both"):
        from lit_imgcls.data.formats.ffcv import write_beton

        for split, infos in shards.items():
            manifest["splits"][split]["ffcv"] = write_beton(work, split, infos, writers[split].locations, enc, opts.num_workers)
    atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest, labels_in_order
