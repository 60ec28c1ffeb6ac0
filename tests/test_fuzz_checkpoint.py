"""Fuzz of checkpoint metadata (issue 14, Done when): any value in any field that a command reads gives either
meta that holds every promise :func:`lit_imgcls.checkpoint_meta.read_meta` makes, or one short UsageError line;
never another exception (a traceback), never a field let through unchecked."""

from __future__ import annotations

import math

import torch
from ckpt_factory import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_imgcls.checkpoint_meta import read_meta
from lit_imgcls.data.image import MAX_PIXELS
from lit_imgcls.errors import UsageError

# Where a value can sit: (section, key); "top" is the checkpoint itself, "meta" its lit_imgcls entry.
FIELDS = [("top", "state_dict"), ("top", "lit_imgcls_position"), ("top", "lit_imgcls"),
          *[("meta", k) for k in ("recipe", "class_names", "image_shape", "mean", "std", "data_config", "version",
                                    "pretrained", "temperature")],
          *[("data_config", k) for k in ("input_size", "crop_mode", "crop_pct", "interpolation", "mean", "std",
                                         "resizer")],
          *[("recipe", k) for k in ("network", "num_layers", "lr", "batch_size", "image_shape", "callbacks",
                                    "lr_schedule", "precision", "resume", "data_dir")]]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["abc", "1,28,28", "1,100000,100000", "squash", "lenet", "", "\x1b[2J", "x" * 5000,
                                     10**400, 2**63, -1, 0, 1, 28, 100_000, 0.0, 0.5, float("nan"), [1, 28, 28],
                                     [1, 100_000, 100_000], [0.5], [10**400], list(range(1000))]),
                    st.just(5000).map(lambda digits: 10**digits))  # too long for str(): its repr fails
values = st.recursive(scalars | st.builds(torch.zeros, st.integers(0, 3)),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(),
                                                                                   inner, max_size=3),
                      max_leaves=8)
BASE = checkpoint("mlp", state_dict={"net.head.bias": torch.zeros(10)})


def _copy(ckpt: dict) -> dict:
    out = dict(ckpt)
    out["lit_imgcls"] = dict(ckpt["lit_imgcls"])
    out["lit_imgcls"]["recipe"] = dict(ckpt["lit_imgcls"]["recipe"])
    out["lit_imgcls"]["data_config"] = dict(ckpt["lit_imgcls"]["data_config"])
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=3))
def test_checkpoint_meta_is_checked_or_refused_in_one_line(changes):
    ckpt = _copy(BASE)
    for (section, key), value in changes:
        target = {"top": ckpt, "meta": ckpt.get("lit_imgcls"), "data_config": ckpt.get("lit_imgcls", {}).get("data_config")
                  if isinstance(ckpt.get("lit_imgcls"), dict) else None,
                  "recipe": ckpt.get("lit_imgcls", {}).get("recipe") if isinstance(ckpt.get("lit_imgcls"), dict) else None}[section]
        if isinstance(target, dict):
            target[key] = value
    try:
        meta = read_meta(ckpt, "fuzz.ckpt")
    except UsageError as exc:
        text = str(exc)
        assert text.startswith("checkpoint fuzz.ckpt") and "\n" not in text.strip() and len(text) < 700, text
        return
    # Let through: every promise holds.
    assert isinstance(meta.recipe, dict) and isinstance(ckpt["state_dict"], dict)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["state_dict"].items())
    assert meta.class_names and all(isinstance(n, str) for n in meta.class_names)
    c, h, w = meta.image_shape
    assert 1 <= c <= 64 and 1 <= h <= 16384 and 1 <= w <= 16384 and h * w <= MAX_PIXELS
    cfg = meta.data_config
    assert len(cfg.mean) == len(cfg.std) == c and all(math.isfinite(v) for v in (*cfg.mean, *cfg.std))
    assert all(v > 0 for v in cfg.std) and 0 < cfg.crop_pct <= 1
    for key in ("image_shape", "mean", "std"):
        if key in meta.raw:
            assert list(meta.raw[key]) == list(cfg.input_size if key == "image_shape" else getattr(cfg, key))
    assert isinstance(meta.raw.get("version", ""), str)
    assert 0.05 <= meta.temperature <= 20  # score --calibrate's range: logits / T stay finite


finite = st.floats(min_value=-10, max_value=10, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 70), st.integers(0, 20_000), st.integers(0, 20_000), st.data())
def test_input_shapes_are_accepted_exactly_within_the_bounds(c, h, w, data):
    """A consistent checkpoint (flat copies equal to data_config) of any shape and statistics: accepted exactly when
    the shape is within every bound (channels 1-64, sides <= 16384, H x W <= MAX_PIXELS) and std > 0."""
    n = data.draw(st.sampled_from([c, max(c - 1, 0), c + 1]), "statistics per channel")
    mean, std = data.draw(st.lists(finite, min_size=n, max_size=n)), data.draw(st.lists(finite, min_size=n, max_size=n))
    ckpt = _copy(BASE)
    ckpt["lit_imgcls"].update(image_shape=[c, h, w], mean=mean, std=std)
    ckpt["lit_imgcls"]["data_config"].update(input_size=[c, h, w], mean=mean, std=std)
    ok = (1 <= c <= 64 and 1 <= h <= 16384 and 1 <= w <= 16384 and h * w <= MAX_PIXELS and n == c
          and all(s > 0 for s in std))
    try:
        meta = read_meta(ckpt, "fuzz.ckpt")
    except UsageError as exc:
        assert not ok, exc
        assert "\n" not in str(exc) and len(str(exc)) < 700
        return
    assert ok and meta.image_shape == (c, h, w)
