"""Class names: how an image tree becomes classes, and the one check that data and weights mean the same classes.

Rules, used by every route (``dataset pack``, the folder dataset, ``predict`` of a folder):

- A class is a sub-folder of the root; its name is the folder's name; classes are numbered in sorted order
  (Python's string order, torchvision's ``ImageFolder`` order).
- Hidden entries are not data: names starting with ``.`` (``.DS_Store``, ``.ipynb_checkpoints``, AppleDouble
  ``._photo.jpg`` files) and ``__MACOSX`` (what macOS puts into zip archives).
- A tree whose "classes" are ``train`` and ``val`` (or ``test``) is one level too high, and is refused.

:func:`check_same_classes` is the single place that compares a data set's class names with a checkpoint's:
``validate``, ``test``, ``score``, a resumed ``fit`` and ``--pretrained`` all call it, so a renamed, added,
removed or reordered class is named instead of turning into a silently wrong accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lit_imgcls.errors import UsageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
NOT_DATA = ("__MACOSX",)
MAX_CLASSES = 100_000  # classes a dataset may have; a label of 10**7 is a wrong column, not 10**7 classes


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is tooling's, not data (see the module's rules)."""
    return name.startswith(".") or name in NOT_DATA


def class_folders(root: str | Path) -> list[str]:
    """The class names of an image tree: its visible sub-folders, sorted."""
    root = Path(root)
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise UsageError(f"cannot list {root}: {exc.strerror or exc}") from None
    return sorted(e.name for e in entries if e.is_dir() and not is_hidden(e.name))


def _images(folder: Path, recursive: bool, exts: tuple[str, ...]) -> list[str]:
    """Every entry with an image ending that is not a folder: regular files, and also FIFOs, devices and dangling
    links, which the reader then refuses with the reason (a silent omission would hide them)."""
    if recursive:
        found = []
        for d, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(x for x in dirs if not is_hidden(x))
            found += [os.path.join(d, f) for f in files if not is_hidden(f) and f.lower().endswith(exts)]
        return sorted(found)
    return sorted(str(p) for p in folder.iterdir()
                  if not is_hidden(p.name) and p.name.lower().endswith(exts) and not p.is_dir())


@dataclass
class ImageTree:
    """The images of a ``<root>/<class>/<file>`` tree: class names, and (path, label) per image in sorted order."""

    root: str
    class_names: list[str]
    items: list[tuple[str, int]] = field(default_factory=list)

    def counts(self) -> list[int]:
        """Images per class, in class order."""
        out = [0] * len(self.class_names)
        for _, label in self.items:
            out[label] += 1
        return out


def list_tree(root: str | Path, recursive: bool = False, exts: tuple[str, ...] = IMAGE_EXTS,
              class_names: Sequence[str] | None = None) -> ImageTree:
    """The images of an image tree by the module's rules.

    Args:
        root: the folder holding one sub-folder per class.
        recursive: also take images from any depth below a class folder (hidden folders are skipped).
        exts: file name endings taken (lower case); other files are not images of the tree.
        class_names: the classes the caller expects (a validation tree must have the training tree's); a tree
            whose visible sub-folders differ is refused, naming the difference.

    Raises:
        UsageError: no class sub-folder, or other classes than ``class_names``.
    """
    root = Path(root)
    found = class_folders(root)
    if not found:
        hint = ""
        if any(f.lower().endswith(exts) for f in os.listdir(root)):
            hint = " (it holds images directly: put each class's images into a sub-folder named after the class)"
        raise UsageError(f"{root} has no class sub-folders: expected {root}/<class>/<image>{hint}")
    splits = sorted({"train", "val", "valid", "validation", "test"} & set(found))
    if "train" in splits and len(splits) > 1:
        raise UsageError(f"{root} looks one level too high: its class folders would be {', '.join(splits)}; give "
                         f"the training folder ({root / 'train'}) instead (fit also reads both splits from "
                         f"--data-dir {root})")
    if class_names is not None and list(class_names) != found:
        check_same_classes(found, list(class_names), f"validation folder {root}", "the training folder",
                           "training data")
    items = [(path, label) for label, name in enumerate(found) for path in _images(root / name, recursive, exts)]
    return ImageTree(str(root), found, items)


def _listing(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_same_classes(data_names: Sequence[str], model_names: Sequence[str], data_where: str,
                       model_where: str, model_word: str = "checkpoint") -> None:
    """Raises :class:`UsageError` unless ``data_names`` equal ``model_names`` in the same order.

    The message names what differs (classes only in one of them, or the same names in another order), since
    label ``i`` of the data must mean output ``i`` of the network.

    Args:
        data_names: class names of the data, in label order.
        model_names: class names the weights were trained on, in output order.
        data_where: what the data is, for the message ("dataset folder (data/val)").
        model_where: what the weights are, for the message ("checkpoint model/x-0003.ckpt").
        model_word: what the reference is in a word or two ("checkpoint"; "training data" when validation data
            is compared with training data).
    """
    data, model = [str(n) for n in data_names], [str(n) for n in model_names]
    if data == model:
        return
    only_data = [n for n in data if n not in set(model)]
    only_model = [n for n in model if n not in set(data)]
    if only_data or only_model:
        parts = []
        if only_data:
            parts.append(f"{_listing(only_data)} only in the data")
        if only_model:
            parts.append(f"{_listing(only_model)} only in the {model_word}")
        what = "; ".join(parts)
    else:
        moved = [n for i, n in enumerate(data) if model[i] != n]
        what = f"the same names in another order ({_listing(moved)} have other indices)"
    trained = "was trained on" if model_word == "checkpoint" else "has"
    raise UsageError(f"{data_where} has {len(data)} classes, {model_where} {trained} {len(model)}: {what}; "
                     f"label i of the data must mean output i of the network, so the data's classes must be the "
                     f"{model_word}'s, in the same order")
