"""What a pack's contents say about the data, for ``dataset pack`` and ``dataset inspect``: whether the storage
order is shuffled (judged against a random order of the same class counts), byte-identical images within and
across splits, and classes that a split lacks. Warnings, never errors: the pack itself is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence


def label_runs(labels: Sequence[int]) -> tuple[int, int, float]:
    """Longest run of one label in storage order, its label, and the share of neighbours with equal labels.

    Args:
        labels: class indices in storage order (a list or a numpy array; a million take a few milliseconds).

    Returns:
        (length of the longest run in samples, its label or -1 when there are no labels, share in [0, 1] of
        neighbouring pairs whose labels are equal).
    """
    import numpy as np

    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.size == 0:
        return 0, -1, 0.0
    starts = np.concatenate(([0], np.flatnonzero(y[1:] != y[:-1]) + 1))  # where each run of one label begins
    lengths = np.diff(np.concatenate((starts, [y.size])))
    i = int(np.argmax(lengths))  # the first of the longest runs
    return int(lengths[i]), int(y[starts[i]]), (y.size - starts.size) / max(1, y.size - 1)


@dataclass(frozen=True)
class OrderEvidence:
    """A split's storage order against a random order of the very same labels (see :func:`order_evidence`)."""

    samples: int
    same: float  # share of neighbouring pairs with one label
    expected_same: float  # its mean over random orders of these labels
    changes: int  # neighbouring pairs whose labels differ
    expected_changes: float  # their mean over random orders of these labels
    missing: float  # 1 - changes / expected_changes: about 0 for a random order, near 1 for a sorted one
    log10_chance: float  # log10 of an upper bound on the chance that a random order changes class this rarely
    longest: int
    longest_label: int


# A warning needs both: evidence that no random order looks like this (a bound of 1e-5 on its chance; the bound
# is loose, so real false alarms are far rarer), and an effect large enough to matter to a loader (at least a
# fifth of the class changes a random order would have are missing). The first keeps tiny and imbalanced packs
# quiet; the second keeps a million-sample pack quiet about harmless, statistically detectable clumping.
_ORDER_MAX_LOG10_CHANCE = -5.0
_ORDER_MIN_MISSING = 0.2


def order_evidence(labels: Sequence[int]) -> OrderEvidence | None:
    """How often the class changes between neighbours in storage order, against a random order of the same labels.

    A random order of labels with class counts ``n_c`` (``N`` in all) puts equal labels side by side with chance
    ``p = sum n_c (n_c - 1) / (N (N - 1))`` per neighbouring pair, whatever the class balance: a pack that is 69%
    one class has about 48% equal neighbours when shuffled, and that is no sign of sorting. The evidence is how
    far the count of class changes falls below its random-order mean ``(N - 1)(1 - p)``.

    Args:
        labels: class indices in storage order (any integers; a list or numpy array, numpy-fast for millions).

    Returns:
        The evidence, or None when there is nothing to judge (fewer than 2 labels, or one class only).
    """
    import math

    import numpy as np

    y = np.asarray(labels, dtype=np.int64).ravel()
    n = int(y.size)
    if n < 2:
        return None
    counts = np.unique(y, return_counts=True)[1].astype(np.float64)
    if counts.size < 2:
        return None
    p = float((counts * (counts - 1)).sum()) / (n * (n - 1.0))
    changes = int(np.count_nonzero(y[1:] != y[:-1]))
    mu = (n - 1) * (1.0 - p)
    # Under a random order the number of changes is a sum of n - 1 dependent indicators whose variance is at most
    # its mean; its lower tail is bounded by a Poisson variable's with the same mean (Chernoff: P(X <= r) <=
    # exp(-mu h(r / mu)), h(x) = 1 - x + x ln x). A normal approximation is not safe here: with a rare class the
    # count is Poisson-like and heavy-tailed (20,000 random orders of 990 + 10 labels reach z = 7.9), while this
    # bound stayed above the observed frequency by a factor of 100 or more in every such simulation (balanced,
    # 95/5, 99/1, 1000 classes, 3 + 3 + 3 samples).
    if changes >= mu:
        ln_chance = 0.0
    else:
        x = changes / mu
        ln_chance = -mu * (1.0 - x + (x * math.log(x) if x > 0 else 0.0))
    longest, label, same = label_runs(y)
    return OrderEvidence(samples=n, same=same, expected_same=p, changes=changes, expected_changes=mu,
                         missing=1.0 - changes / mu, log10_chance=ln_chance / math.log(10), longest=longest,
                         longest_label=label)


def unshuffled_warning(labels: Sequence[int], class_names: list[str]) -> str | None:
    """A warning when the storage order is sorted by class, in whole or in blocks, saying what that does to training.

    Judged against a random order of the same labels (:func:`order_evidence`), so a shuffled pack of any class
    balance stays quiet, and with the evidence in the message.

    Args:
        labels: class indices of one split in storage order.
        class_names: the pack's class names (a label outside them is shown as its number).
    """
    ev = order_evidence(labels)
    if ev is None or ev.log10_chance > _ORDER_MAX_LOG10_CHANCE or ev.missing < _ORDER_MIN_MISSING:
        return None
    import math

    label = ev.longest_label
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    return (
        f"labels are stored in long runs (longest: {ev.longest} samples of class {name!r}; {ev.same:.0%} of "
        f"neighbours share a label where a random order of the same class counts gives {ev.expected_same:.0%}, "
        f"and the class changes {ev.changes} times in {ev.samples} samples against about "
        f"{ev.expected_changes:.0f}: a random order does that with a chance below 1e{math.ceil(ev.log10_chance)}): "
        "this pack is not shuffled. A loader's shuffle buffer holds a few thousand samples, so training would see "
        "one class at a time and accuracy can sit at chance for whole epochs (MXNet's im2rec warning). Re-pack "
        "with `lit-imgcls dataset pack`, without --no-shuffle."
    )


def _some(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _named(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def class_range(per_class: Sequence[int], class_names: list[str]) -> str:
    """The spread of samples over the classes of one split, for ``dataset inspect``: ``per class 18 (cat) to 20
    (astronaut, dog)``, every class at the fewest and at the most named (up to 3 each, then a count), or ``per
    class 20 (each of the 3 classes)`` when they are alike (naming one class there would say it differs)."""
    if not per_class:
        return "no classes"
    lo, hi = min(per_class), max(per_class)
    if lo == hi:
        return f"per class {lo} (each of the {len(per_class)} classes)"
    fewest = [n for n, c in zip(class_names, per_class) if c == lo]
    most = [n for n, c in zip(class_names, per_class) if c == hi]
    return f"per class {lo} ({_named(fewest)}) to {hi} ({_named(most)})"


def missing_class_warnings(splits: dict[str, Any], class_names: list[str]) -> list[str]:
    """Warnings for a train split without some of the pack's classes (an empty class folder, or a split that
    left a class out), and for val and test splits that have no sample of a class that train has.

    Args:
        splits: the manifest's ``splits`` (``count`` and ``per_class`` of each), or the same shape built from lists.
        class_names: the pack's class names.

    Returns:
        One warning per such split (none when train, or that split, is absent or empty), naming up to 10 classes.
    """
    train = splits.get("train")
    if not train or not train.get("count"):
        return []
    present = [i for i, n in enumerate(train["per_class"]) if n > 0]
    warnings = []
    absent = [class_names[i] for i, n in enumerate(train["per_class"]) if n == 0]
    if absent:
        warnings.append(
            f"train has no sample of {len(absent)} of the {len(class_names)} classes ({_some(absent)}): `fit` refuses "
            "such a pack, since a network trained on it could never predict them; add images of them (an empty "
            "class folder?), or shuffle before splitting")
    # The hint names the pack's flag with its command: `dataset inspect` prints these warnings too.
    for split, share in (("val", "a lower `lit-imgcls dataset pack --train-ratio`"),
                         ("test", "a higher `lit-imgcls dataset pack --test-ratio`")):
        entry = splits.get(split)
        if not entry or not entry.get("count"):
            continue
        missing = [class_names[i] for i in present if entry["per_class"][i] == 0]
        if missing:
            warnings.append(
                f"{split} has no sample of {len(missing)} of the {len(present)} classes in train ({_some(missing)}): "
                f"{split} accuracy says nothing about them, so a model that never predicts them goes unnoticed; give "
                f"those classes more images, or {split} a larger share ({share})")
    return warnings


DUPLICATE_EXAMPLES = 20  # example groups kept in the manifest: enough to find the copies, bounded for any pack
_EXAMPLE_SAMPLES = 4  # samples shown per example group


def summarise_duplicates(digests: bytes, split_codes: Sequence[int], split_names: Sequence[str],
                         labels: Sequence[int], describe: Callable[[int], dict]) -> dict:
    """Groups of byte-identical stored images, as the manifest's ``duplicates`` records them.

    Args:
        digests: the sha256 (32 bytes each) of every stored image, concatenated, sample ``i`` at ``32 * i``.
        split_codes: per sample, the index of its split in ``split_names``.
        split_names: the splits, in storage order (train, val, test).
        labels: per sample, its class index.
        describe: sample index -> ``{"split", "key", "label"}`` and, where known, ``"path"`` (called only for
            the samples of the example groups).

    Returns:
        ``{"groups": images stored more than once, "copies": samples beyond the first of each such image,
        "within_split": {split: samples whose image is stored earlier in the same split}, "cross_split":
        {"train/val": images stored in both, ...}, "label_conflicts": images stored with different labels,
        "examples": [{"size", "kinds", "samples"}, ...]}`` (up to :data:`DUPLICATE_EXAMPLES` groups; zero
        counts are left out of the two maps). Sorting the digests costs O(n log n) and 32 bytes a sample.
    """
    import numpy as np

    n = len(digests) // 32
    result: dict = {"groups": 0, "copies": 0, "within_split": {}, "cross_split": {}, "label_conflicts": 0,
                    "examples": []}
    if n < 2:
        return result
    k = len(split_names)
    v = np.frombuffer(bytes(digests), dtype=np.dtype((np.void, 32)), count=n)
    order = np.argsort(v, kind="stable")  # stable: within a group, samples keep storage order
    sv = v[order]
    new = np.ones(n, dtype=bool)
    new[1:] = sv[1:] != sv[:-1]
    gid = np.cumsum(new) - 1
    in_dup = np.bincount(gid)[gid] >= 2
    if not in_dup.any():
        return result
    idx = order[in_dup]  # samples that share their image with another, group by group
    g = np.cumsum(np.r_[True, gid[in_dup][1:] != gid[in_dup][:-1]]) - 1  # groups renumbered 0..G-1
    n_groups = int(g[-1]) + 1
    sp = np.asarray(split_codes, dtype=np.int64)[idx]
    lb = np.asarray(labels, dtype=np.int64)[idx]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, idx.size])
    pairs = np.unique(g * k + sp)  # the distinct (group, split) pairs
    splits_per_group = np.bincount(pairs // k, minlength=n_groups)
    mask = np.zeros(n_groups, dtype=np.int64)  # bit s set: the group has a sample in split s
    np.bitwise_or.at(mask, pairs // k, np.left_shift(1, pairs % k))
    conflict = np.minimum.reduceat(lb, starts) != np.maximum.reduceat(lb, starts)
    within_g, cross_g = sizes > splits_per_group, splits_per_group >= 2

    result["groups"], result["copies"] = n_groups, int(idx.size - n_groups)
    for c, name in enumerate(split_names):
        extra = int(np.count_nonzero(sp == c) - np.count_nonzero(pairs % k == c))
        if extra:
            result["within_split"][name] = extra
    for a in range(k):
        for b in range(a + 1, k):
            both = int(np.count_nonzero((mask >> a) & (mask >> b) & 1))
            if both:
                result["cross_split"][f"{split_names[a]}/{split_names[b]}"] = both
    result["label_conflicts"] = int(np.count_nonzero(conflict))

    # Examples: the earliest stored group of each kind first (so every warning has one), then more of each kind
    # in turn, label conflicts first, up to the bound.
    by_first = np.argsort(idx[starts], kind="stable")
    queues = [[int(i) for i in by_first[flags[by_first]][:DUPLICATE_EXAMPLES]]
              for flags in (conflict, cross_g, within_g)]
    chosen: list[int] = []
    for turn in range(DUPLICATE_EXAMPLES):
        for queue in queues:
            if turn < len(queue) and queue[turn] not in chosen and len(chosen) < DUPLICATE_EXAMPLES:
                chosen.append(queue[turn])
    for grp in chosen:
        lo, hi = int(starts[grp]), int(starts[grp] + sizes[grp])
        pick = _pick_examples(idx[lo:hi].tolist(), sp[lo:hi].tolist(), lb[lo:hi].tolist())
        kinds = [kind for kind, flags in (("label_conflict", conflict), ("cross_split", cross_g),
                                          ("within_split", within_g)) if flags[grp]]
        result["examples"].append({"size": int(sizes[grp]), "kinds": kinds, "samples": [describe(i) for i in pick]})
    return result


def _pick_examples(members: list[int], splits: list[int], labels: list[int]) -> list[int]:
    """Up to :data:`_EXAMPLE_SAMPLES` samples of a group, in storage order: one of each (split, label) first (what
    makes the group leakage or a conflict), then the next ones (what makes it a duplicate within a split)."""
    first: dict[tuple[int, int], int] = {}
    for i, s, lbl in zip(members, splits, labels):
        first.setdefault((s, lbl), i)
    pick = list(first.values())[:_EXAMPLE_SAMPLES]
    for i in members:
        if len(pick) >= _EXAMPLE_SAMPLES:
            break
        if i not in pick:
            pick.append(i)
    return sorted(pick)


def _example_text(example: dict | None, class_names: list[str]) -> str:
    if not example:
        return ""
    shown = []
    for s in example["samples"]:
        label = s["label"]
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        where = f" {s['path']!r}" if s.get("path") else ""
        shown.append(f"{s['key']}{where} ({name})")  # the key starts with the split's name
    more = f" and {example['size'] - len(shown)} more" if example["size"] > len(shown) else ""
    return ", e.g. " + " = ".join(shown) + more


def duplicate_warnings(dup: dict, class_names: list[str]) -> list[str]:
    """One warning per kind of duplicate that ``dup`` (a manifest's ``duplicates``) records: copies within a
    split, images in more than one split (leakage), identical images with different labels; each with its count
    and an example."""
    def example(kind: str) -> dict | None:
        return next((e for e in dup.get("examples", []) if kind in e.get("kinds", [])), None)

    warnings = []
    within = dup.get("within_split", {})
    if within:
        per = ", ".join(f"{s} {n}" for s, n in within.items())
        warnings.append(
            f"duplicates: {sum(within.values())} samples repeat an image stored earlier in the same split ({per}; "
            f"byte-identical stored images, by sha256){_example_text(example('within_split'), class_names)}: a "
            "repeated image weighs more in training and in the accuracy; remove the copies from the source and re-pack")
    cross = dup.get("cross_split", {})
    if cross:
        per = ", ".join(f"{pair.replace('/', ' and ')} share {n}" for pair, n in cross.items())
        warnings.append(
            f"leakage: the same images are stored in more than one split ({per}; byte-identical, by sha256)"
            f"{_example_text(example('cross_split'), class_names)}: val and test accuracy then count images the "
            "model was trained on; remove the copies from the source and re-pack")
    if dup.get("label_conflicts"):
        warnings.append(
            f"label conflicts: {dup['label_conflicts']} byte-identical images are stored with different labels"
            f"{_example_text(example('label_conflict'), class_names)}: at most one of those labels is right; fix the "
            "source's labels and re-pack")
    return warnings
