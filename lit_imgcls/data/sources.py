"""What `dataset pack` reads: an image folder tree, an im2rec .lst list, a CSV list, or a built-in dataset."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lit_imgcls.data.classes import IMAGE_EXTS as DEFAULT_EXTS  # the one list of image endings
from lit_imgcls.data.classes import MAX_CLASSES
from lit_imgcls.errors import UsageError, quoted


@dataclass
class Item:
    """One sample to pack: a file (``path``) or a row of an in-memory array (``index``)."""

    label: int
    path: str | None = None
    index: int | None = None


@dataclass
class Source:
    """Everything a pack needs to know about its input."""

    kind: str
    class_names: list[str]
    items: list[Item]
    # Built-in datasets come with their official splits; other sources are split by ratio.
    splits: dict[str, list[Item]] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    channels: int = 3
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    skipped: list[dict] = field(default_factory=list)  # rows rejected while listing, with a reason


def _folder(root: Path, recursive: bool, exts: tuple[str, ...]) -> Source:
    """An image tree by the rules every route shares (:func:`lit_imgcls.data.classes.list_tree`)."""
    from lit_imgcls.data.classes import list_tree

    tree = list_tree(root, recursive=recursive, exts=exts)
    return Source("folder", tree.class_names, [Item(label, path) for path, label in tree.items])


def _lst(path: Path, root: Path) -> Source:
    """An im2rec list: ``index<TAB>label<TAB>path`` a line (more columns allowed: the path is the last).

    Class names come from ``classes.txt`` in the list's folder when there is one (what ``--list`` writes beside
    its lists), else labels are named "0", "1", ... up to the largest. Rows whose label is not a non-negative
    integer are skipped with the reason; a file that is missing or unreadable is skipped later, when packed.

    Raises:
        UsageError: no usable row; a label outside the classes of ``classes.txt`` (naming file and line); a
            malformed ``classes.txt``.
    """
    items, skipped, labels, lines = [], [], [], []
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            if len(parts) < 3:
                raise ValueError("needs index<TAB>label<TAB>path")
            label_f = float(parts[1])
            if label_f != int(label_f) or label_f < 0:
                raise ValueError(f"label {quoted(parts[1], 40)} is not a non-negative integer")
            _check_label(int(label_f), path, lineno)
            labels.append(int(label_f))
            lines.append(lineno)
            items.append(Item(int(label_f), str(root / parts[-1])))
        except (ValueError, OverflowError) as exc:  # OverflowError: int() of an infinite label
            skipped.append({"path": f"{path}:{lineno}", "reason": str(exc) if isinstance(exc, ValueError) else
                            f"label {quoted(parts[1], 40)} is not a non-negative integer"})
    if not items:
        raise UsageError(f"{path} lists no usable rows (format: index<TAB>label<TAB>path)")
    known = _read_classes(path.parent)
    if known is None:
        classes = [str(i) for i in range(max(labels) + 1)]
    else:
        classes, classes_path = known
        for label, lineno in zip(labels, lines):
            if label >= len(classes):
                raise UsageError(f"{path} line {lineno}: label {label} is outside the {len(classes)} classes of "
                                 f"{classes_path} (0..{len(classes) - 1}): the list and its class map do not match")
    return Source("lst", classes, items, skipped=skipped)


MAX_LIST_LINES = 50_000_000  # lines of one .lst or .csv (ImageNet's train list has 1.3 million)


def _list_text(path: Path) -> str:
    """The text of a list file: a regular file within the ``"list"`` bound, of at most :data:`MAX_LIST_LINES` lines.

    Raises:
        UsageError: not a regular file, too large, not UTF-8, or more lines than the bound.
    """
    from lit_imgcls.bounded_read import read_text

    text = read_text(path, "list")
    lines = text.count("\n") + text.count("\r") - text.count("\r\n")
    if lines > MAX_LIST_LINES:
        raise UsageError(f"list {path} has {lines:,} lines, more than the {MAX_LIST_LINES:,} lit-imgcls reads "
                         "from one list: split it")
    return text


def _lines(path: Path) -> list[str]:
    """The lines of a list file (:func:`_list_text`), ended by a newline, CR-LF or CR as Python's text files are."""
    lines = _list_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_label(label: int, path: Path, lineno: int) -> None:
    """A :class:`UsageError` for a label no dataset of at most :data:`MAX_CLASSES` classes has."""
    if label >= MAX_CLASSES:
        raise UsageError(f"{path} line {lineno}: label {label:,} would mean {label + 1:,} classes, more than the "
                         f"{MAX_CLASSES:,} lit-imgcls takes (is a column out of place? im2rec lists are "
                         "index<TAB>label<TAB>path)")


def _csv(path: Path, root: Path) -> Source:
    """A ``path,label`` CSV (a ``path,label`` header line is optional); labels are class names or indices.

    Index labels (all digits) take their names from ``classes.txt`` in the CSV's folder when there is one, else
    are named "0", "1", ...; name labels map through ``classes.txt`` when there is one (so the train and val
    CSVs of one dataset agree on indices), else are numbered in sorted order.

    Raises:
        UsageError: a row without a label; with ``classes.txt``, an index outside it or a name not in it (naming
            file and line); a malformed ``classes.txt``.
    """
    reader = csv.reader(io.StringIO(_list_text(path), newline=""))  # newline="": quoted fields may hold one
    rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    if rows and rows[0][1][:2] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise UsageError(f"{path} lists no rows (format: path,label)")
    bad = [lineno for lineno, r in rows if len(r) < 2]
    if bad:
        raise UsageError(f"{path} line {bad[0]} has no label: expected 'path,label'")
    names = [r[1].strip() for _, r in rows]
    known = _read_classes(path.parent)
    if known is not None:
        classes, classes_path = known
        index = {n: i for i, n in enumerate(classes)}
        numeric = all(n.isascii() and n.isdigit() for n in names)  # "²".isdigit(), but int("²") fails
        labels = []
        for (lineno, _), name in zip(rows, names):
            label = int(name) if numeric else index.get(name, -1)
            if not 0 <= label < len(classes):
                what = f"label {name}" if numeric else f"class {name!r}"
                raise UsageError(f"{path} line {lineno}: {what} is not among the {len(classes)} classes of "
                                 f"{classes_path}: the list and its class map do not match")
            labels.append(label)
    elif all(n.isascii() and n.isdigit() for n in names):
        for (lineno, _), n in zip(rows, names):
            _check_label(int(n), path, lineno)
        classes = [str(i) for i in range(max(int(n) for n in names) + 1)]
        labels = [int(n) for n in names]
    else:
        classes = sorted(set(names))
        if len(classes) > MAX_CLASSES:
            raise UsageError(f"{path} names {len(classes):,} classes, more than the {MAX_CLASSES:,} lit-imgcls takes")
        index = {n: i for i, n in enumerate(classes)}
        labels = [index[n] for n in names]
    return Source("csv", classes, [Item(label, str(root / r[0].strip())) for (_, r), label in zip(rows, labels)])


CLASSES_FILE = "classes.txt"  # beside a .lst or .csv: line i names label i (written by `dataset pack --list`)


def _read_classes(folder: Path) -> tuple[list[str], Path] | None:
    """The class names of ``folder/classes.txt`` (used by :func:`_lst` and :func:`_csv`) and its path, or None
    when there is none.

    Raises:
        UsageError: it cannot be read, names no class, or has an empty or repeated line.
    """
    from lit_imgcls.bounded_read import ReadRefused, read_text

    path = folder / CLASSES_FILE
    if not os.path.lexists(path):
        return None
    try:  # a regular file within its bound: a FIFO there would block the pack
        text = read_text(path, "class map")
    except ReadRefused as exc:
        raise UsageError(f"cannot read the class map {path}: {exc.reason}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the last line's newline
    names = [line.rstrip("\r") for line in lines]
    if len(names) > MAX_CLASSES:
        raise UsageError(f"{path} names {len(names):,} classes, more than the {MAX_CLASSES:,} lit-imgcls takes")
    if not names:
        raise UsageError(f"{path} names no classes (one class name a line, line 1 naming label 0)")
    seen: dict[str, int] = {}
    for lineno, name in enumerate(names, 1):
        if not name.strip():
            raise UsageError(f"{path} line {lineno} is empty: one class name a line, line N naming label N-1")
        if name in seen:
            raise UsageError(f"{path} line {lineno} repeats class {name!r} of line {seen[name]}")
        seen[name] = lineno
    return names, path


def _builtin(name: str, data_dir: str | None) -> Source:
    from lit_imgcls.data.cards import load_card

    if name == "mnist":
        from lit_imgcls.data.mnist import load_mnist

        arrays, _ = load_mnist(data_dir)
    else:
        from lit_imgcls.data.cifar import load_cifar10

        arrays = load_cifar10(data_dir)
        # (N, 3, 32, 32) -> (N, 32, 32, 3): images are encoded height-width-channel
        arrays = {**arrays, "train_images": arrays["train_images"].transpose(0, 2, 3, 1),
                  "test_images": arrays["test_images"].transpose(0, 2, 3, 1)}
    card = load_card(name)
    splits = {
        "train": [Item(int(lbl), index=i) for i, lbl in enumerate(arrays["train_labels"])],
        "val": [Item(int(lbl), index=i) for i, lbl in enumerate(arrays["test_labels"])],
    }
    return Source(name, list(card["classes"]), splits["train"] + splits["val"], splits=splits,
                  arrays={"train": arrays["train_images"], "val": arrays["test_images"]},
                  channels=int(card["image_shape"][0]), mean=list(card["mean"]), std=list(card["std"]))


BUILTIN = ("mnist", "cifar10")


def open_source(src: str, root: str | None = None, recursive: bool = False, exts: tuple[str, ...] = DEFAULT_EXTS,
                data_dir: str | None = None) -> Source:
    """Lists the samples of ``src``: a folder, a ``.lst``/``.csv`` file, or a built-in name.

    The paths of a list are relative to ``root`` (im2rec's root, ``--root``), else to the list's own folder: the
    same base :func:`lit_imgcls.data.pack.write_lists` writes them against.
    """
    if src in BUILTIN:
        return _builtin(src, data_dir)
    path = Path(src).expanduser()
    if path.is_dir():
        return _folder(path, recursive, exts)
    if not path.exists():
        raise UsageError(f"source {src!r} is neither a folder, a .lst/.csv file nor a built-in dataset ({', '.join(BUILTIN)})")
    base = Path(root).expanduser() if root else path.parent
    if path.suffix == ".lst":
        return _lst(path, base)
    if path.suffix == ".csv":
        return _csv(path, base)
    raise UsageError(f"source file {src} must end in .lst (index<TAB>label<TAB>path) or .csv (path,label)")
