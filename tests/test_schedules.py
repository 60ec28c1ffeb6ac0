"""Each LR schedule against values computed by hand."""

from __future__ import annotations

import math

import pytest

from lit_imgcls.schedules import LRSchedule, parse_epochs


def test_mxnet_step_decay_with_fractional_epochs():
    # 100 steps an epoch, x0.9 every half epoch = every 50 steps (MXNet's --lr-factor .9 --lr-factor-epoch .5)
    s = LRSchedule("step", steps_per_epoch=100, total_steps=400, factor=0.9, factor_epoch=0.5)
    assert s(0) == 1.0 and s(49) == 1.0
    assert s(50) == pytest.approx(0.9)
    assert s(99) == pytest.approx(0.9)
    assert s(100) == pytest.approx(0.81)
    assert s(399) == pytest.approx(0.9**7)


def test_multistep_at_given_epochs():
    s = LRSchedule("multistep", steps_per_epoch=10, total_steps=1000, factor=0.1, step_epochs=parse_epochs("30,60"))
    assert s(299) == 1.0
    assert s(300) == pytest.approx(0.1)
    assert s(599) == pytest.approx(0.1)
    assert s(600) == pytest.approx(0.01)


def test_cosine_with_linear_warmup():
    s = LRSchedule("cosine", steps_per_epoch=10, total_steps=110, warmup_epochs=1)
    assert s(0) == pytest.approx(0.1)  # (0 + 1) / 10
    assert s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)  # cosine starts at the top
    assert s(60) == pytest.approx(0.5)  # halfway through the 100 cosine steps
    assert s(110) == pytest.approx(0.0, abs=1e-12)


def test_onecycle_rises_then_falls():
    s = LRSchedule("onecycle", steps_per_epoch=100, total_steps=101, onecycle_pct=0.25)
    assert s(0) == pytest.approx(1 / 25)
    assert s(25) == pytest.approx(1.0)  # the peak, at 25% of the steps
    mid = 25 + (100 - 25) / 2
    assert s(int(mid)) == pytest.approx((1 / 25e4) + (1 - 1 / 25e4) * 0.5 * (1 + math.cos(math.pi * (int(mid) - 25) / 75)))
    assert s(100) == pytest.approx(1 / 25e4)
    assert s(12) < s(13) and s(60) > s(61)


def test_constant_and_validation():
    assert LRSchedule("constant", 10, 10)(5) == 1.0
    with pytest.raises(ValueError, match="lr_factor_epoch"):
        LRSchedule("step", 10, 10)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        LRSchedule("triangle", 10, 10)
    with pytest.raises(ValueError):
        parse_epochs("60,30")
    assert parse_epochs("30, 60") == (30.0, 60.0)


def test_schedule_is_applied_per_iteration_in_training(tmp_path):
    """The LR the optimizer really used at each step follows the step schedule."""
    from lit_imgcls.engine import fit
    from lit_imgcls.recipe import Recipe

    r = Recipe(network="mlp", batch_size=100, num_epochs=2, num_examples=1000, lr=0.2, lr_factor=0.5,
               lr_factor_epoch=0.5, disp_batches=1, progress_bar=False, threads=2, run_dir=str(tmp_path))
    res = fit(r)
    import csv

    rows = list(csv.DictReader(open(f"{res.run_dir}/metrics.csv")))
    lrs = {int(row["step"]): float(row["lr"]) for row in rows if row.get("lr")}
    # the row at global step s (s steps taken) shows the LR step s used, 0-based index s - 1; 10 steps an epoch,
    # halved every 5
    for step, lr in lrs.items():
        assert lr == pytest.approx(0.2 * 0.5 ** ((step - 1) // 5)), (step, lr)
    assert len(lrs) == 20


def test_linear_falls_straight_to_zero_after_its_warmup():
    """FFCV's triangular LR (ffcv-imagenet's cyclic): linear warm-up, then a straight line to 0 at the end."""
    s = LRSchedule("linear", steps_per_epoch=10, total_steps=110, warmup_epochs=1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)  # warm-up: (step + 1) / 10
    assert s(10) == pytest.approx(1.0)  # the peak
    assert s(60) == pytest.approx(0.5)  # half of the 100 falling steps
    assert s(109) == pytest.approx(0.01) and s(110) == 0.0
    plain = LRSchedule("linear", steps_per_epoch=10, total_steps=100)
    assert [plain(k) for k in (0, 25, 99)] == pytest.approx([1.0, 0.75, 0.01])
