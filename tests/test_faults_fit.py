"""Faults during `fit`: kill -9 at random steps, Ctrl-C once and twice, a read-only or full disk.

Each run is a real `python -m lit_imgcls fit` process; the proof is always the final weights and optimizer state
compared with an uninterrupted run of the same seed, or the files left on disk.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from lit_imgcls.io import load_checkpoint

from conftest import cli_on_small_disk, needs_mounts, quick_args, run_cli, start_fit, wait_for_step

# 1000 images in batches of 64: 15 steps an epoch, 45 in all; the step schedule makes the LR move every 7-8 steps.
COMMON = dict(num_examples=1000, lr=0.1, lr_factor=0.9, lr_factor_epoch=0.5, seed=2, num_epochs=3, disp_batches=1)
TOTAL_STEPS = 45


def fit_args(tmp: Path, **overrides) -> list[str]:
    return quick_args(tmp, **{**COMMON, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The final checkpoint of the same run without faults."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    res = run_cli("fit", *fit_args(tmp), cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    return load_checkpoint(tmp / "model/mnist-0003.ckpt")


def assert_same_training(a: dict, b: dict, why: str, steps: int = TOTAL_STEPS) -> None:
    """Weights, momentum buffers, LR schedule and step count identical (CPU, same threads: bit for bit)."""
    assert a["global_step"] == b["global_step"] == steps, why
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=0, atol=0, msg=f"{k}: {why}")
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for k in sa:
        torch.testing.assert_close(sb[k]["momentum_buffer"], sa[k]["momentum_buffer"], rtol=0, atol=0, msg=why)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"], why


@pytest.mark.slow
@pytest.mark.parametrize("fused", [1, 4])
def test_kill9_at_random_steps_then_resume_auto_ends_as_uninterrupted(tmp_path, uninterrupted, fused):
    # A new random pair of steps each run (printed on failure): over many CI runs every position gets hit, the
    # epoch boundaries and the steps right after a save included.
    seed = int.from_bytes(os.urandom(4), "little")
    kills = sorted(random.Random(seed).sample(range(2, TOTAL_STEPS - 2), 2))
    why = f"kill -9 at steps {kills} (seed {seed}), fused_steps {fused}"
    # Fused: reports and step checkpoints every 4 steps, so the 4 batches stay fused (fused_steps is lowered to
    # divide disp_batches and save_every_steps: lit_imgcls/callbacks/step_units.py).
    every = dict(save_every_steps=4, disp_batches=4) if fused > 1 else dict(save_every_steps=5)
    args = fit_args(tmp_path, **every, fused_steps=fused, resume="auto")
    for step in kills:
        proc = start_fit(args, tmp_path)
        try:
            wait_for_step(proc, tmp_path / "runs", step)
        finally:
            proc.kill()  # SIGKILL: no handler runs, no file is closed
            proc.wait()
    res = run_cli("fit", *args, cwd=tmp_path)
    assert res.returncode == 0, f"{why}: {res.stderr[-2000:]}"
    assert "resuming from" in res.stderr + res.stdout, why
    assert not list((tmp_path / "model").glob(".*.tmp")), f"{why}: temporary files left behind"
    assert len(list((tmp_path / "model").glob("mnist-step-*.ckpt"))) <= 2, why
    assert_same_training(uninterrupted, load_checkpoint(tmp_path / "model/mnist-0003.ckpt"), why)


@pytest.mark.slow
def test_ctrl_c_saves_a_stop_checkpoint_and_resume_continues_exactly(tmp_path, uninterrupted):
    args = fit_args(tmp_path, resume="auto")
    proc = start_fit(args, tmp_path)
    try:
        wait_for_step(proc, tmp_path / "runs", 20)  # in the second epoch
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Ctrl-C: stopping after this step and saving a checkpoint" in err
    last = err.strip().splitlines()[-1]
    stop = tmp_path / "model/mnist-stop.ckpt"
    assert last.startswith("lit-imgcls: stopped by Ctrl-C (SIGINT) at step ") and f"checkpoint {stop};" in last, err[-2000:]
    assert "Traceback" not in err and (tmp_path / "model/mnist-stop.ckpt.sha256").is_file()
    res = run_cli("fit", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from {stop}" in res.stderr + res.stdout
    assert_same_training(uninterrupted, load_checkpoint(tmp_path / "model/mnist-0003.ckpt"), "stopped by Ctrl-C")


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once(tmp_path):
    # ResNet-18 steps take long enough (~0.3 s on 2 cores) that the second Ctrl-C lands inside the first's step.
    args = quick_args(tmp_path, network="resnet18", num_examples=2000, disp_batches=1, num_epochs=1)
    proc = start_fit(args, tmp_path)
    try:
        wait_for_step(proc, tmp_path / "runs", 2, timeout=240)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "second Ctrl-C: quitting now, without a checkpoint" in err and "Traceback" not in err
    assert took < 5, f"took {took:.1f} s to quit after the second Ctrl-C"
    assert not list((tmp_path / "model").glob("mnist-0*.ckpt"))
    for ckpt in (tmp_path / "model").glob("*.ckpt"):  # a stop checkpoint finished before the second Ctrl-C is whole
        load_checkpoint(ckpt)


def fit_on_small_disk(tmp: Path, mount_options: str, args: list[str]) -> tuple[int, str]:
    return cli_on_small_disk(tmp, mount_options, "fit", *args)


@needs_mounts
def test_a_read_only_output_folder_is_refused_before_training(tmp_path):
    args = fit_args(tmp_path, model_prefix=tmp_path / "disk/model/mnist")
    # A read-only disk with the folder already there: creating it would fail for another reason.
    rc, err = fit_on_small_disk(tmp_path, "size=1m,ro", args)
    assert rc == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert lines == [f"lit-imgcls: error: model prefix folder {tmp_path}/disk/model is not writable: "
                     "Read-only file system; choose another with --model-prefix"], err[-2000:]


@needs_mounts
def test_a_disk_too_small_for_one_checkpoint_is_refused_before_training(tmp_path):
    rc, err = fit_on_small_disk(tmp_path, "size=2m", fit_args(tmp_path, model_prefix=tmp_path / "disk/mnist"))
    assert rc == 2, err[-2000:]
    [line] = err.strip().splitlines()
    assert line.startswith(f"lit-imgcls: error: {tmp_path}/disk has ") and "saving needs room for two" in line, line
    # the estimate is close to, and not below, the real size of a LeNet checkpoint with SGD momentum (3.47 MB)
    estimate = float(re.search(r"one checkpoint of this run takes about ([\d.]+) MB", line).group(1))
    assert 3.47 <= estimate <= 3.9, line
    assert not list((tmp_path / "runs").glob("*/*/events.jsonl"))  # refused before any run started


@pytest.mark.slow
@needs_mounts
def test_a_disk_that_fills_up_mid_run_loses_nothing_and_resume_finishes_exactly(tmp_path, uninterrupted):
    # 9 MiB holds two LeNet checkpoints (3.5 MB each) but not the third: epoch 3's save fails.
    args = fit_args(tmp_path, model_prefix=tmp_path / "disk/mnist")
    rc, err = fit_on_small_disk(tmp_path, "size=9m", args)
    assert rc == 1, err[-2000:]
    assert "lit-imgcls: warning:" in err and "it will stop with an error when the disk is full" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"lit-imgcls: error: cannot write checkpoint {tmp_path}/disk/mnist-0003.ckpt: No space left "
                           "on device; nothing was written in its place"), err[-2000:]
    assert "Traceback" not in err
    left = tmp_path / "left"
    assert sorted(p.name for p in left.iterdir()) == [
        "mnist-0001.ckpt", "mnist-0001.ckpt.sha256", "mnist-0002.ckpt", "mnist-0002.ckpt.sha256", "mnist-recipe.yaml"]
    # Move the survivors to a roomy disk and rerun: epoch 3 is trained again, ending as the uninterrupted run.
    model = tmp_path / "model"
    shutil.copytree(left, model)
    res = run_cli("fit", *fit_args(tmp_path, resume="auto"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from {model}/mnist-0002.ckpt" in res.stderr + res.stdout
    assert_same_training(uninterrupted, load_checkpoint(model / "mnist-0003.ckpt"), "disk full at epoch 3")
