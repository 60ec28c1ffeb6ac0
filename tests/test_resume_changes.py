"""Resuming with a changed recipe (issue 13 item 2): every changed key is said, the LR schedule is the new recipe's
advanced to the point reached (MXNet's --load-epoch semantics), and changes that cannot be honoured are refused."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from lit_imgcls.errors import UsageError
from lit_imgcls.recipe import Recipe
from lit_imgcls.schedules import LRSchedule

N_TRAIN = 96
KINDS = {
    "constant": {},
    "step": {"lr_factor": 0.5, "lr_factor_epoch": 1.0},
    "multistep": {"lr_factor": 0.1, "lr_step_epochs": "3"},
    "cosine": {"warmup_epochs": 0.5},
    "onecycle": {},
    "linear": {"warmup_epochs": 0.5},  # recipes/imagenet.yaml's (FFCV's triangular LR)
}


def _data(batch_size: int):
    from lit_imgcls.data.arrays import ArrayDataModule

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N_TRAIN + 32, 8, 8), dtype=np.uint8)
    y = np.arange(N_TRAIN + 32) % 3
    return ArrayDataModule(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], batch_size=batch_size)


def _recipe(tmp: Path, kind: str, **changes) -> Recipe:
    base = dict(network="mlp", dataset="mnist", lr=0.1, batch_size=16, num_epochs=4, lr_schedule=kind, threads=1,
                progress_bar=False, disp_batches=1, run_dir=str(tmp / "runs"), model_prefix=str(tmp / "m"),
                data_nthreads=0, **KINDS[kind])
    base.update(changes)
    return Recipe(**base)


def _fit(recipe: Recipe):
    from lit_imgcls.engine import fit

    return fit(recipe, datamodule=_data(recipe.batch_size))


def _lrs(run_dir: str) -> list[float]:
    """The LR of each training step, as the Speedometer logged it (disp_batches 1) into metrics.csv."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [float(r["lr"]) for r in csv.DictReader(f) if r.get("lr")]


def _expected(recipe: Recipe, first_position: int, count: int) -> list[float]:
    per_epoch = N_TRAIN // recipe.batch_size
    schedule = LRSchedule(recipe.schedule(), per_epoch, per_epoch * recipe.num_epochs, recipe.lr_factor,
                          recipe.lr_factor_epoch, tuple(float(v) for v in (recipe.lr_step_epochs or "").split(",") if v),
                          recipe.warmup_epochs, recipe.onecycle_pct)
    return [recipe.lr * schedule(first_position + i) for i in range(count)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_schedule_resumed_with_more_epochs_a_new_lr_and_a_new_batch_size(tmp_path, kind, capsys):
    first = _recipe(tmp_path, kind)
    _fit(first)
    cases = {
        "more epochs": dict(num_epochs=6),
        "new lr": dict(lr=0.02),
        "new batch size": dict(batch_size=8),
    }
    for name, change in cases.items():
        resumed = _recipe(tmp_path, kind, load_epoch=2, **change)
        capsys.readouterr()
        result = _fit(resumed)
        said = capsys.readouterr().err
        for key, value in change.items():
            assert f"{key} {getattr(first, key)!r} -> {value!r}" in said, (name, said)
        per_epoch = N_TRAIN // resumed.batch_size
        steps = (resumed.num_epochs - 2) * per_epoch
        got = _lrs(result.run_dir)
        want = _expected(resumed, 2 * per_epoch, steps)
        assert len(got) == steps, (name, len(got), steps)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, err_msg=f"{kind}, {name}")
        # the run never trains at LR 0 (the old cosine length would have given 0 from the first resumed step)
        assert all(v > 0 for v in got), (name, got)
        if kind == "multistep" and name == "new batch size":  # the decay at epoch 3 is the first step of epoch 3
            decayed = [i for i in range(1, steps) if got[i] < got[i - 1] * 0.5]
            assert decayed == [per_epoch], got


def test_a_resumed_run_continues_at_the_lr_an_uninterrupted_one_has(tmp_path):
    """The same recipe, resumed at epoch 2, gives the LRs the uninterrupted run logged for epochs 3-4."""
    whole = _fit(_recipe(tmp_path / "a", "cosine"))
    _fit(_recipe(tmp_path / "b", "cosine", num_epochs=2))
    resumed = _fit(_recipe(tmp_path / "b", "cosine", load_epoch=2))
    per_epoch = N_TRAIN // 16
    np.testing.assert_allclose(_lrs(resumed.run_dir), _lrs(whole.run_dir)[2 * per_epoch:], rtol=1e-9)


@pytest.mark.parametrize("key,value,says", [
    ("network", "lenet", "another network's weights"),
    ("optimizer", "adamw", "other optimizer"),
    ("freeze_backbone", True, "other parameters"),
    ("backbone_lr_mult", 0.5, "parameter groups"),
])
def test_changes_a_resume_cannot_honour_are_refused(tmp_path, key, value, says):
    from lit_imgcls.resume_changes import recipe_changes

    saved = dataclasses.asdict(_recipe(tmp_path, "constant"))
    with pytest.raises(UsageError, match=says):
        recipe_changes(saved, _recipe(tmp_path, "constant", **{key: value}), "m-0002.ckpt", mid_epoch=False)


def test_inside_an_epoch_the_keys_deciding_its_batches_are_fixed(tmp_path):
    from lit_imgcls.resume_changes import recipe_changes

    saved = dataclasses.asdict(_recipe(tmp_path, "constant"))
    for key, value in (("batch_size", 8), ("seed", 3), ("num_processes", 2)):
        new = _recipe(tmp_path, "constant", **{key: value})
        with pytest.raises(UsageError, match=f"inside an epoch .* {key} "):
            recipe_changes(saved, new, "m-step-00000010.ckpt", mid_epoch=True)
        assert recipe_changes(saved, new, "m-0002.ckpt", mid_epoch=False) == [(key, saved[key], value)]
    # the LR may change anywhere
    assert recipe_changes(saved, _recipe(tmp_path, "constant", lr=0.5), "x", mid_epoch=True) == [("lr", 0.1, 0.5)]


def test_a_changed_batch_size_from_a_step_checkpoint_is_refused_end_to_end(tmp_path):
    _fit(_recipe(tmp_path, "constant", num_epochs=2, save_every_steps=2))
    steps = sorted(tmp_path.glob("m-step-*.ckpt"))
    assert steps
    # the newest checkpoint is the epoch one; make a step checkpoint the newest, as a crash mid-epoch would
    for p in tmp_path.glob("m-000*.ckpt*"):
        p.unlink()
    with pytest.raises(UsageError, match="inside an epoch .* batch_size 16 -> 8"):
        _fit(_recipe(tmp_path, "constant", num_epochs=3, batch_size=8, resume="auto"))


def test_resume_auto_after_a_finished_run_says_so_and_succeeds(tmp_path):
    import io
    from contextlib import redirect_stdout

    from lit_imgcls.cli import main

    _fit(_recipe(tmp_path, "constant", num_epochs=1))
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["fit", "--network", "mlp", "--dataset", "mnist", "--num-examples", "256", "--num-epochs", "1",
                     "--model-prefix", str(tmp_path / "m"), "--resume", "auto", "--run-dir", str(tmp_path / "runs"),
                     "--progress-bar", "false"])
    assert code == 0
    lines = out.getvalue().strip().splitlines()
    assert lines == [f"final: {tmp_path / 'm'}-0001.ckpt ends epoch 1 and num_epochs is 1: nothing left to train"]


def test_a_fresh_run_refuses_another_runs_checkpoints_unless_overwrite(tmp_path, capsys):
    from lit_imgcls.checkpoints import check_fresh_prefix

    first = _fit(_recipe(tmp_path, "constant", num_epochs=1))
    assert first.checkpoint
    mine = tmp_path / "m-notes.txt"  # not a name lit-imgcls writes: never touched
    mine.write_text("keep")
    with pytest.raises(UsageError, match=r"already holds checkpoints .*--resume auto.*--overwrite"):
        _fit(_recipe(tmp_path, "constant", num_epochs=1))
    assert Path(first.checkpoint).is_file()
    check_fresh_prefix(str(tmp_path / "m"), overwrite=True)
    assert not Path(first.checkpoint).exists() and mine.read_text() == "keep"
    assert "removed 1 checkpoint(s)" in capsys.readouterr().err


def test_schedule_position_is_not_the_old_runs_step_count():
    """The arithmetic the resume relies on: epoch 2 of a run of 8 steps an epoch, batch size halved -> 16."""
    s = LRSchedule("multistep", steps_per_epoch=12, total_steps=48, factor=0.1, step_epochs=(3.0,))
    assert s(2 * 12) == 1.0 and s(3 * 12 - 1) == 1.0 and math.isclose(s(3 * 12), 0.1)


def test_a_resumed_runs_checkpoints_record_its_own_recipe(tmp_path, capsys):
    """The next resume compares against the recipe that really trained the newest checkpoint."""
    from lit_imgcls.io import load_checkpoint

    _fit(_recipe(tmp_path, "cosine", num_epochs=2))
    _fit(_recipe(tmp_path, "cosine", num_epochs=3, lr=0.01, load_epoch=2))
    saved = load_checkpoint(tmp_path / "m-0003.ckpt")["lit_imgcls"]["recipe"]
    assert saved["lr"] == 0.01 and saved["num_epochs"] == 3
    capsys.readouterr()
    _fit(_recipe(tmp_path, "cosine", num_epochs=4, lr=0.01, resume="auto"))
    said = capsys.readouterr().err
    assert "num_epochs 3 -> 4" in said and "lr " not in said.split("changed recipe:")[1].split(";")[0], said


def test_resume_auto_skips_a_checkpoint_with_non_finite_weights_and_says_so(tmp_path, capsys):
    from lit_imgcls.io import load_checkpoint, save_checkpoint

    _fit(_recipe(tmp_path, "constant", num_epochs=2))
    state = load_checkpoint(tmp_path / "m-0002.ckpt")
    next(iter(state["state_dict"].values())).fill_(float("inf"))
    save_checkpoint(state, tmp_path / "m-0002.ckpt")  # a matching .sha256: only the weights are wrong
    capsys.readouterr()
    _fit(_recipe(tmp_path, "constant", num_epochs=3, resume="auto"))
    err = capsys.readouterr().err
    assert "m-0002.ckpt holds weights that are not finite" in err and "trying the one before" in err, err


@pytest.mark.parametrize("keys,says", [
    (dict(lr_schedule="cosine", lr_step_epochs="3"), "lr_step_epochs is set"),
    (dict(lr_schedule="cosine", lr_factor_epoch=1.0), "lr_factor_epoch is set"),
    (dict(lr_schedule="onecycle", warmup_epochs=1.0), "onecycle warms up by itself"),
    (dict(lr_factor_epoch=1.0, lr_step_epochs="3"), "lr_step_epochs is set"),
])
def test_a_schedule_key_the_schedule_does_not_read_is_refused(keys, says):
    from lit_imgcls.recipe import validate

    with pytest.raises(UsageError, match=says):
        validate(Recipe(network="mlp", **keys))


def test_a_schedule_chosen_on_the_command_line_drops_the_files_other_keys(tmp_path):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from lit_imgcls.cli import main

    err = io.StringIO()
    with redirect_stdout(io.StringIO()) as out, redirect_stderr(err):
        code = main(["fit", "--recipe", str(Path(__file__).parents[1] / "recipes/mnist-mlp.yaml"), "--lr-schedule",
                     "cosine", "--print-recipe"])
    assert code == 0, err.getvalue()
    assert "lr_factor_epoch 1.0 from the recipe is dropped: lr_schedule cosine does not read it" in err.getvalue()
    assert "lr_factor_epoch: null" in out.getvalue()


def test_overwrite_cannot_go_with_a_resume(tmp_path):
    from lit_imgcls.engine import fit

    with pytest.raises(UsageError, match="--overwrite starts a run from scratch"):
        fit(_recipe(tmp_path, "constant", resume="auto"), datamodule=_data(16), overwrite=True)
