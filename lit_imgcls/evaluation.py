"""The numbers of an evaluation: per-class precision/recall/F1, balanced accuracy, top-k, confusions, expected
calibration error and its reliability diagram, and temperature scaling.

One home for these rules: ``score`` prints and reports them, ``score --calibrate`` fits the temperature, and the
TUI reads the JSON :func:`summarize` returns. Everything here is plain numpy (and torch for the temperature fit) on
arrays already in memory: labels (N,) int64 and probabilities (N, C) float32 whose rows sum to 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Equal-width confidence bins of the expected calibration error: 15, as in Guo et al. 2017 ("On Calibration of
#: Modern Neural Networks", ICML), whose figures the field quotes.
ECE_BINS = 15
#: How many most confident mistakes :func:`summarize` lists (and ``score --report`` shows as thumbnails).
MISTAKES = 16


def _checked(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = len(labels) = {labels.shape[0]}, got {probs.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got {labels.min()}..{labels.max()}")
    return labels, probs


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[i, j]`` counts images of class i predicted as class j: int64 (C, C)."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class from a confusion matrix (rows true, columns predicted), float64 (C,),
    and the support (images of each class, int64 (C,)). A class never predicted has precision NaN (0/0) and one
    with no images recall NaN: undefined, not zero, as the report shows them."""
    confusion = np.asarray(confusion, dtype=np.int64)
    hits = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.full(hits.shape, np.nan), where=predicted > 0)
    recall = np.divide(hits, support, out=np.full(hits.shape, np.nan), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.full(hits.shape, np.nan),
                   where=np.isfinite(both) & (both > 0))
    f1[np.isfinite(both) & (both == 0)] = 0.0  # defined, and wrong every time
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def balanced_accuracy(confusion: np.ndarray) -> float:
    """The mean recall over the classes that have images (scikit-learn's ``balanced_accuracy_score``): a model that
    names the majority class for everything scores 1/C, not the majority's share."""
    recall = per_class(confusion)["recall"]
    recall = recall[np.isfinite(recall)]
    return float(recall.mean()) if recall.size else float("nan")


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error and the reliability diagram's bins (Guo et al. 2017, section 2).

    Each image falls in one of ``bins`` equal-width bins of its top-1 probability (the confidence, in (0, 1]; the
    first bin includes 0); ECE = sum over bins of (images in bin / N) * |accuracy in bin - mean confidence in bin|.

    Args:
        labels: int (N,) true classes.
        probs: float (N, C) class probabilities.
        bins: the number of bins (>= 1).

    Returns:
        (ECE in [0, 1], one dict per bin: lower, upper, count, confidence (mean, or None when empty), accuracy).

    Raises:
        ValueError: mismatched shapes, labels out of range, bins < 1.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    labels, probs = _checked(labels, probs)
    confidence = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if probs.size else np.zeros(0, dtype=bool)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; ceil puts an exact edge in the lower bin, as Guo et al.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    table, ece, n = [], 0.0, max(len(labels), 1)
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else None
        acc = float(correct[inside].mean()) if count else None
        if count:
            ece += count / n * abs(acc - conf)
        table.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "confidence": conf, "accuracy": acc})
    return float(ece), table


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of :func:`reliability` alone."""
    return reliability(labels, probs, bins)[0]


#: The temperatures :func:`fit_temperature` returns and a checkpoint may hold (``score --calibrate``): a set the
#: model gets all right (or all wrong) drives the fit to 0 (or infinity) with no finite optimum, and float32 logits
#: divided by a tiny T overflow to infinity, so both ends are bounded.
TEMPERATURE_RANGE = (0.05, 20.0)


def temperature_problem(value: object) -> str | None:
    """None for a usable temperature (a float or int, not bool, finite, within :data:`TEMPERATURE_RANGE`); else
    what is valid, for a one-line message. One rule for a checkpoint's and an export's stored temperature."""
    lo, hi = TEMPERATURE_RANGE
    # Compared as Python numbers (an int beyond any float compares exactly; NaN fails both bounds).
    if isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi:
        return None
    return f"a number in [{lo:g}, {hi:g}] (temperature scaling's T; 1 = uncalibrated)"


def scaled_softmax(logits, temperature: float = 1.0):
    """softmax(logits / T) over dim 1 of a torch tensor (N, C): temperature scaling's calibrated probabilities
    (Guo et al. 2017). T = 1 divides nothing, so an uncalibrated model's numbers (and exported graph) are the plain
    softmax's. The one place predict, score and export apply a checkpoint's temperature."""
    return (logits if temperature == 1 else logits / temperature).softmax(dim=1)


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(true class) over the images (nats), the loss temperature scaling minimises; probabilities of
    exactly 0 count as 1e-30.

    Raises:
        ValueError: no images, mismatched shapes, or labels out of range.
    """
    labels, probs = _checked(labels, probs)
    if not len(labels):
        raise ValueError("the negative log-likelihood needs at least one image")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-30, None)).mean())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, C) float32 of logits divided by ``temperature`` (Guo et al. 2017, temperature scaling).

    Works on probabilities: log p differs from the logits by a constant per row, which softmax ignores, so
    softmax(log p / T) = softmax(logits / T). Probabilities of exactly 0 (underflow) are taken as 1e-30.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(log p / T) on these images: Guo et
    al. 2017's temperature scaling, fitted with L-BFGS on log T (so T stays positive) in float64.

    It changes confidences only: the top-1 class of every image, hence accuracy, stays the same. The result lies in
    :data:`TEMPERATURE_RANGE`.

    Raises:
        ValueError: no images, mismatched shapes, or labels out of range.
    """
    import torch

    labels, probs = _checked(labels, probs)
    if not len(labels):
        raise ValueError("temperature scaling needs at least one image")
    logp = torch.from_numpy(np.log(np.clip(probs, 1e-30, None)))
    target = torch.from_numpy(labels)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logp / log_t.exp(), target)
        loss.backward()
        return loss

    opt.step(nll)
    lo, hi = TEMPERATURE_RANGE
    return float(min(max(math.exp(float(log_t.detach())), lo), hi))


def summarize(labels: np.ndarray, probs: np.ndarray, class_names: list[str], top_k: int = 5,
              bins: int = ECE_BINS, mistakes: int = MISTAKES, confusions: int = 10) -> dict[str, Any]:
    """Everything ``score --report`` shows, as JSON-ready data (only str, int, float, None, lists and dicts).

    Args:
        labels: int (N,) true classes; probs: float (N, C) probabilities; class_names: C names.
        top_k: also top-k accuracy (at most C; < 2 leaves it out as None).
        bins: reliability bins; mistakes: how many most confident mistakes; confusions: how many worst confusions.

    Returns:
        ``count``, ``top1``, ``top_k``, ``topk``, ``balanced_accuracy``, ``macro_f1`` (mean F1 over classes with
        images), ``classes`` (name, support, precision, recall, f1; NaN written as None), ``confusion`` (C x C
        counts), ``worst_confusions`` (true, predicted, count, share of the true class; largest first),
        ``calibration`` (ece, bins, reliability table) and ``confident_mistakes`` (index into the N images, true,
        predicted, confidence; most confident first).

    Raises:
        ValueError: mismatched shapes or labels out of range.
    """
    labels, probs = _checked(labels, probs)
    c = probs.shape[1]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} classes")
    predicted = probs.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(labels, predicted, c)
    stats = per_class(matrix)
    k = min(top_k, c) if top_k > 1 else 0
    topk = None
    if k and len(labels):
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        topk = float((top == labels[:, None]).any(axis=1).mean())
    ece, table = reliability(labels, probs, bins)

    def num(v) -> float | None:  # JSON has no NaN
        return float(v) if np.isfinite(v) else None

    off = matrix.copy()
    np.fill_diagonal(off, 0)
    worst = []
    for flat in np.argsort(off, axis=None, kind="stable")[::-1][:confusions]:
        i, j = divmod(int(flat), c)
        if off[i, j]:
            worst.append({"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j]),
                          "share": float(off[i, j] / stats["support"][i])})
    confidence = probs.max(axis=1) if len(labels) else np.zeros(0)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:mistakes]
    f1 = stats["f1"][stats["support"] > 0]
    f1 = f1[np.isfinite(f1)]
    return {
        "count": int(len(labels)),
        "top1": float((predicted == labels).mean()) if len(labels) else None,
        "top_k": k, "topk": topk,
        "balanced_accuracy": num(balanced_accuracy(matrix)),
        "macro_f1": float(f1.mean()) if f1.size else None,
        "classes": [{"name": class_names[i], "support": int(stats["support"][i]),
                     "precision": num(stats["precision"][i]), "recall": num(stats["recall"][i]),
                     "f1": num(stats["f1"][i])} for i in range(c)],
        "confusion": matrix.tolist(),
        "worst_confusions": worst,
        "calibration": {"ece": ece, "bins": bins, "reliability": table},
        "confident_mistakes": [{"index": int(i), "true": class_names[int(labels[i])],
                                "predicted": class_names[int(predicted[i])], "confidence": float(confidence[i])}
                               for i in wrong],
    }
