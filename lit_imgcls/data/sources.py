"""What `dataset pack` reads: an image folder tree, an im2rec .lst list, a CSV list, or a built-in dataset."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lit_imgcls.errors import UsageError

DEFAULT_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


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
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    items: list[Item] = []
    for label, name in enumerate(classes):
        folder = root / name
        walker = (Path(d) / f for d, _, files in os.walk(folder) for f in files) if recursive else folder.iterdir()
        for path in sorted(walker):
            if path.suffix.lower() in exts and path.is_file():
                items.append(Item(label, str(path)))
    return Source("folder", classes, items)


def _lst(path: Path, root: Path) -> Source:
    items, skipped, labels = [], [], []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                if len(parts) < 3:
                    raise ValueError("needs index<TAB>label<TAB>path")
                label_f = float(parts[1])
                if label_f != int(label_f) or label_f < 0:
                    raise ValueError(f"label {parts[1]!r} is not a non-negative integer")
                labels.append(int(label_f))
                items.append(Item(int(label_f), str(root / parts[-1])))
            except ValueError as exc:
                skipped.append({"path": f"{path}:{lineno}", "reason": str(exc)})
    if not items:
        raise UsageError(f"{path} lists no usable rows (format: index<TAB>label<TAB>path)")
    classes = [str(i) for i in range(max(labels) + 1)]
    return Source("lst", classes, items, skipped=skipped)


def _csv(path: Path, root: Path) -> Source:
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and rows[0][:2] == ["path", "label"]:
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows) if len(r) < 2]
    if bad:
        raise UsageError(f"{path} row {bad[0] + 1} has no label: expected 'path,label'")
    names = [r[1].strip() for r in rows]
    if all(n.isdigit() for n in names):
        classes = [str(i) for i in range(max(int(n) for n in names) + 1)]
        labels = [int(n) for n in names]
    else:
        classes = sorted(set(names))
        labels = [classes.index(n) for n in names]
    return Source("csv", classes, [Item(label, str(root / r[0].strip())) for r, label in zip(rows, labels)])


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
    """Lists the samples of ``src``: a folder, a ``.lst``/``.csv`` file (paths relative to ``root``), or a built-in name."""
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
