"""Checks of the training data that run before a run starts, whatever the data path (in memory, folder, packs).

Each failure is one line naming what is wrong and what would work, instead of a torchmetrics or BatchNorm
traceback, or a run that "trains" zero steps and exits 0.
"""

from __future__ import annotations

from typing import Sequence

from lit_imgcls.errors import UsageError


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_classes(class_names: Sequence[str], where: str) -> None:
    """A classifier needs two classes at least.

    Raises:
        UsageError: fewer than two classes.
    """
    if len(class_names) < 2:
        found = f"only class {_names(class_names)}" if class_names else "no class"
        raise UsageError(f"{where} has {found}: a classifier needs at least 2 classes (for an image folder, one "
                         "sub-folder per class)")


def check_training_samples(counts: Sequence[int] | None, class_names: Sequence[str], batch_size: int, workers: int,
                           where: str) -> None:
    """Every class has training samples, and every data-parallel worker gets one full batch at least.

    Args:
        counts: training samples per class (None: unknown before loading, only the class count is checked).
        class_names: names in class order.
        batch_size: samples per batch on each worker.
        workers: data-parallel workers (each trains on an equal share).
        where: the data, for messages ("dataset folder (data/train)").

    Raises:
        UsageError: a class without samples, or fewer samples per worker than one batch (zero training steps).
    """
    if counts is None:
        return
    empty = [name for name, n in zip(class_names, counts) if n == 0]
    if empty:
        raise UsageError(f"{where} has no training samples of class {_names(empty)} ({len(empty)} of "
                         f"{len(class_names)} classes): the network could never learn to predict it; add images "
                         "of it, or remove the class")
    total = sum(counts)
    per_worker = total // max(1, workers)
    if per_worker < batch_size:
        split = f" split over {workers} workers" if workers > 1 else ""
        raise UsageError(f"{where} has {total} training samples{split}, fewer than one batch of batch_size "
                         f"{batch_size}: training would take no step; use --batch-size {max(1, per_worker)} or less")


def check_batch_norm(net, batch_size: int, network: str) -> None:
    """Batch normalisation cannot train on one sample per batch (its variance over the batch is zero).

    Raises:
        UsageError: ``batch_size`` 1 with a network that has BatchNorm layers.
    """
    from torch import nn

    if batch_size > 1:
        return
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise UsageError(f"batch_size 1 with network {network}, which has BatchNorm layers: they normalise over "
                         "the batch and cannot train on one sample per batch; use --batch-size 2 or more")


def check_described_data(num_classes: int | None, num_examples: int | None, subsets: bool, class_names: Sequence[str],
                         counts: Sequence[int] | None, where: str) -> None:
    """The recipe's ``num_classes`` and ``num_examples`` against the data, as MXNet users give them: describing it.

    Args:
        num_classes: the class count the recipe says the data has (None: not given).
        num_examples: the recipe's training examples (None: not given).
        subsets: the dataset trains on the first ``num_examples`` (in-memory ones): fewer than it holds is fine.
        class_names: the data's classes.
        counts: training samples per class as the dataset holds them (None: unknown, or not training).
        where: the data, for messages.

    Raises:
        UsageError: another class count; more examples than the data holds; for a dataset that trains on all its
            samples, another count than it holds (or a count it cannot tell).
    """
    if num_classes is not None and num_classes != len(class_names):
        raise UsageError(f"num_classes is {num_classes} but {where} has {len(class_names)} classes "
                         f"({_names(class_names)}): leave --num-classes out (the classes are read from the data) or "
                         "point at the data you meant")
    if num_examples is None or counts is None and subsets:
        return
    if counts is None:
        raise UsageError(f"num_examples {num_examples} cannot be checked: {where} does not tell its sample count "
                         "before training; leave --num-examples out")
    total = sum(counts)
    if num_examples > total or (num_examples != total and not subsets):
        use = "it trains on all of them, so --num-examples must be that count or left out" if not subsets else \
            f"--num-examples takes the first N of them, {total} at most"
        raise UsageError(f"num_examples is {num_examples} but {where} has {total} training samples: {use}")
