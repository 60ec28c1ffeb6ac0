"""Imbalanced classes: class weights for the loss (``class_weights``) and class-balanced draws (``sampler``).

Both need only what every DataModule already states before training: the training samples per class
(``training_class_counts``: arrays' labels, a folder's usable files, a pack manifest's ``per_class``), and, for the
balanced draw, each sample's label in the loader's own index order.
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

from lit_imgcls.errors import UsageError

SKEW_HINT_RATIO = 3.0  # dataset inspect suggests the imbalance options from this largest/smallest class ratio on


def inverse_frequency(counts: Sequence[int]) -> list[float]:
    """Class weights ``w_c = N / (K * n_c)``, inverse to the class frequency and normalised so that they average 1
    over the training images (``sum_c n_c * w_c = N``): the loss keeps its scale, a class of the average size
    keeps weight 1. (N: training images, K: classes, n_c: images of class c; scikit-learn's "balanced" class
    weights, after King and Zeng, "Logistic Regression in Rare Events Data", 2001.)

    Args:
        counts: training samples per class, in class order, each > 0 (fit refuses an empty class before this).

    Raises:
        UsageError: a class without samples (its weight would be infinite).
    """
    total, k = sum(counts), len(counts)
    if any(n <= 0 for n in counts):
        raise UsageError("class_weights auto needs a training sample of every class; a class has none")
    return [total / (k * n) for n in counts]


def read_class_weights(path: str, class_names: Sequence[str]) -> list[float]:
    """One weight per class from a small file, read as data (never run), in class order.

    Formats: a JSON object ``{"cat": 1.0, "dog": 4.5}`` (a ``.json`` file, or any file starting with ``{``), or
    text/CSV lines ``NAME,WEIGHT`` (also ``NAME<TAB>WEIGHT`` or ``NAME WEIGHT``: the last separator splits, so a
    name may hold spaces); blank lines and lines starting with ``#`` are skipped, and a first line ``class,weight``
    is a header. Every class must be named once, with a finite weight > 0.

    Raises:
        UsageError: the file cannot be read, a line or value is malformed, a class is missing, named twice or
            unknown (the line lists the valid names).
    """
    from lit_imgcls.bounded_read import ReadRefused, read_text

    try:
        text = read_text(path, "class weights")
    except ReadRefused as exc:
        raise UsageError(f"class_weights: {exc}", key="class_weights") from None
    where = f"class_weights file {path}"
    pairs: list[tuple[str, object, str]] = []  # (name, value, where in the file)
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{where} is not valid JSON ({exc}); give an object like "
                             '{"cat": 1.0, "dog": 4.5}', key="class_weights") from None
        if not isinstance(data, dict):
            raise UsageError(f"{where} must hold a JSON object of class name -> weight, got "
                             f"{type(data).__name__}", key="class_weights")
        pairs = [(str(k), v, f"key {k!r}") for k, v in data.items()]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            sep = "," if "," in line else ("\t" if "\t" in line else None)
            parts = [p.strip() for p in line.rsplit(sep, 1)]
            if len(parts) != 2 or not parts[0]:
                raise UsageError(f"{where}, line {number}: {line!r:.60} is not NAME,WEIGHT", key="class_weights")
            if not pairs and parts[0].lower() in ("class", "name", "class_name") and parts[1].lower() == "weight":
                continue  # a header line
            pairs.append((parts[0], parts[1], f"line {number}"))
    names = list(class_names)
    weights: dict[str, float] = {}
    for name, value, at in pairs:
        if name not in names:
            raise UsageError(f"{where}, {at}: unknown class {name!r:.60}; the classes are: {', '.join(names)}",
                             key="class_weights")
        if name in weights:
            raise UsageError(f"{where}, {at}: class {name!r} is given twice", key="class_weights")
        try:
            weight = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise UsageError(f"{where}, {at}: the weight of class {name!r} must be a finite number > 0, got "
                             f"{value!r:.40}", key="class_weights")
        weights[name] = weight
    missing = [n for n in names if n not in weights]
    if missing:
        raise UsageError(f"{where} gives no weight for {len(missing)} of the {len(names)} classes: "
                         f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}; every class needs one",
                         key="class_weights")
    return [weights[n] for n in names]


def resolve_class_weights(value: str | None, class_names: Sequence[str], counts: Sequence[int] | None,
                          where: str) -> list[float] | None:
    """The recipe's ``class_weights`` as one float per class (None: unset): ``auto`` from ``counts``
    (:func:`inverse_frequency`), else the file it names (:func:`read_class_weights`).

    Raises:
        UsageError: ``auto`` for data whose class counts are unknown before training, or a bad file.
    """
    if value is None:
        return None
    if value == "auto":
        if counts is None:
            raise UsageError(f"class_weights auto needs the training samples per class, and {where} does not state "
                             "them before training; give a file of one weight per class", key="class_weights")
        return inverse_frequency(counts)
    if not os.path.exists(value):
        raise UsageError(f"class_weights is neither 'auto' nor an existing file: {value}", key="class_weights")
    return read_class_weights(value, class_names)


def balanced_draws(labels, num_classes: int, seed: int, epoch: int, draws: int):
    """``draws`` sample indices drawn with replacement so that every class is equally likely (each sample's
    weight is 1 / its class's count), from a generator fixed by (seed, epoch): the balanced order of one epoch,
    the same on every rank, which each rank strides as it strides a shuffle. Classes without samples are never
    drawn.

    Args:
        labels: int64 (N,) tensor (or sequence) of class indices, in the loader's index order.
        num_classes: K.
        seed, epoch: what fixes the draw (a resumed epoch draws it again, identically).
        draws: indices to draw (the epoch's samples over all ranks: its length is the shuffle's).

    Returns:
        (indices, keys): int64 (draws,) tensors; ``keys[i] = indices[i] + N * r`` where r counts the earlier
        draws of the same sample in this epoch, so that a sample drawn twice gets its own augmentation draws
        each time (keys below N are the sample's plain index, as under shuffle).
    """
    import torch

    from lit_imgcls.data.arrays import epoch_generator

    labels = torch.as_tensor(labels, dtype=torch.long).view(-1)
    counts = torch.bincount(labels, minlength=num_classes).double()
    weight = (1.0 / counts.clamp(min=1))[labels]
    indices = torch.multinomial(weight, draws, replacement=True, generator=epoch_generator(seed, epoch))
    # r: how many times each index was drawn before, found by a stable sort on the index.
    order = torch.sort(indices, stable=True).indices
    sorted_idx = indices[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    run_start = torch.cummax(torch.where(first, torch.arange(draws), torch.zeros(draws, dtype=torch.long)), 0).values
    repeat = torch.empty_like(indices)
    repeat[order] = torch.arange(draws) - run_start
    return indices, indices + len(labels) * repeat


def check_sampler(sampler: str, dataset: str, draws_balanced: bool) -> None:
    """Refuses ``sampler balanced`` for a loader that cannot draw single samples with replacement.

    Raises:
        UsageError: naming the datasets that can.
    """
    if sampler == "balanced" and not draws_balanced:
        raise UsageError(f"sampler balanced is not available for dataset {dataset}: its loader streams shards in "
                         "order and cannot draw single samples at random; it works with datasets mnist, cifar10, "
                         "npz, folder and ffcv (--dataset ffcv, for a pack made with `dataset pack --format both`); "
                         "or keep sampler shuffle and use --class-weights auto", key="sampler")


def skew_hint(per_class: Sequence[int], draws_balanced: bool = True) -> str | None:
    """For ``dataset inspect``: a suggestion of the imbalance options when the largest class has at least
    :data:`SKEW_HINT_RATIO` times the samples of the smallest (non-empty) one, else None. ``draws_balanced``
    False (a pack with no FFCV copy, whose wds loader cannot draw single samples) suggests class weights alone."""
    present = [n for n in per_class if n > 0]
    if len(present) < 2:
        return None
    ratio = max(present) / min(present)
    if ratio < SKEW_HINT_RATIO:
        return None
    skewed = (f"classes are skewed: the largest has {ratio:.1f}x the samples of the smallest (>= "
              f"{SKEW_HINT_RATIO:g}); consider `fit --class-weights auto` (loss weights N / (K * n_c))")
    if not draws_balanced:
        return (skewed + "; `--sampler balanced` needs the pack's FFCV copy (pack it again with "
                "`dataset pack --format both`), as its WebDataset shards are read in order")
    return skewed + " or `--sampler balanced` (classes drawn equally often)"
