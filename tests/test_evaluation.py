"""The evaluation numbers (lit_imgcls.evaluation) against values worked out by hand, and temperature scaling
recovering a known temperature."""

import json

import numpy as np
import pytest

from lit_imgcls import evaluation as ev


def _onehotish(pred, conf, c):
    """Probabilities (N, c) whose argmax is ``pred`` with top probability ``conf``, the rest spread evenly."""
    p = np.full((len(pred), c), 0.0)
    for i, (k, q) in enumerate(zip(pred, conf)):
        p[i] = (1 - q) / (c - 1)
        p[i, k] = q
    return p


def test_per_class_and_balanced_accuracy_by_hand():
    # 3 classes: class 0 has 4 images (3 right, 1 called 1), class 1 has 2 (both right), class 2 has 1 (called 0).
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 0])
    m = ev.confusion_matrix(labels, pred, 3)
    assert m.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 0]]
    s = ev.per_class(m)
    assert s["precision"][:2] == pytest.approx([3 / 4, 2 / 3])
    assert np.isnan(s["precision"][2])  # never predicted: undefined, not 0
    assert s["recall"].tolist() == pytest.approx([3 / 4, 1.0, 0.0])
    assert s["f1"][0] == pytest.approx(0.75) and s["f1"][1] == pytest.approx(0.8)
    assert ev.balanced_accuracy(m) == pytest.approx((0.75 + 1 + 0) / 3)


def test_ece_by_hand():
    # Bin (0.6, 0.667]: two images at 0.65, one right -> |0.5 - 0.65|; bin (0.933, 1]: two at 0.95, both right.
    labels = np.array([0, 1, 0, 1])
    probs = _onehotish([0, 0, 0, 1], [0.65, 0.65, 0.95, 0.95], 2)
    ece, table = ev.reliability(labels, probs, bins=15)
    assert ece == pytest.approx(0.5 * 0.15 + 0.5 * 0.05)
    assert sum(b["count"] for b in table) == 4
    assert [b["count"] for b in table if b["count"]] == [2, 2]


def test_temperature_scaling_recovers_the_temperature_and_keeps_top1():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 4
    truth = np.exp(logits / 2.5)
    truth /= truth.sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=r) for r in truth])  # labels drawn from the model's logits / 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = ev.fit_temperature(labels, probs)
    assert t == pytest.approx(2.5, rel=0.1)
    scaled = ev.apply_temperature(probs, t)
    assert (scaled.argmax(1) == probs.argmax(1)).all()
    assert ev.expected_calibration_error(labels, scaled) < ev.expected_calibration_error(labels, probs) / 5


def test_summary_is_json_and_orders_mistakes():
    labels = np.array([0, 0, 1, 1, 2])
    probs = _onehotish([0, 1, 1, 0, 2], [0.9, 0.6, 0.8, 0.99, 0.7], 3)
    s = ev.summarize(labels, probs, ["cat", "dog", "emu"], top_k=2)
    json.dumps(s, allow_nan=False)  # no NaN anywhere
    assert s["top1"] == pytest.approx(3 / 5)
    assert [m["index"] for m in s["confident_mistakes"]] == [3, 1]
    assert s["confident_mistakes"][0] == {"index": 3, "true": "dog", "predicted": "cat", "confidence": 0.99}
    assert s["worst_confusions"][0]["count"] == 1
    assert [c["support"] for c in s["classes"]] == [2, 2, 1]
    with pytest.raises(ValueError):
        ev.summarize(labels, probs, ["a", "b"])
