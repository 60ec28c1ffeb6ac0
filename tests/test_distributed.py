"""Data parallel training with real worker processes on the CPU (gloo): same result as one process, resume,
and no hangs when a worker dies or stops answering."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_imgcls.io import load_checkpoint

from conftest import quick_args, run_cli

COMMON = dict(num_examples=2000, lr=0.1, lr_factor=0.9, lr_factor_epoch=0.5, seed=5, threads=1)


def _assert_same_weights(a: Path, b: Path, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=atol, msg=k)


@pytest.mark.slow
def test_two_workers_equal_one_worker_with_the_same_global_batch(tmp_path):
    """2 processes x batch 32 all-reduce to the gradient of 1 process x batch 64 over the same samples."""
    one = run_cli("fit", *quick_args(tmp_path / "one", batch_size=64, **COMMON), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = run_cli("fit", *quick_args(tmp_path / "two", batch_size=32, num_processes=2, **COMMON), cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert "Starting with 2 processes" in two.stderr + two.stdout
    assert two.stdout.count("final:") == 1  # rank 0 reports for the run
    # Summation order differs (two half batches, then an all-reduce), and 31 SGD steps at LR 0.1 grow those
    # 1e-7 differences to ~3e-4 on weights of ~0.5; a different sample order or a missed all-reduce moves them ~1e-1.
    _assert_same_weights(tmp_path / "one/model/mnist-0001.ckpt", tmp_path / "two/model/mnist-0001.ckpt", 1e-3, 1e-3)
    assert load_checkpoint(tmp_path / "two/model/mnist-0001.ckpt")["global_step"] == 2000 // 64


@pytest.mark.slow
def test_two_workers_resume_with_load_epoch(tmp_path):
    args = dict(batch_size=32, num_processes=2, **COMMON)
    full = run_cli("fit", *quick_args(tmp_path / "a", num_epochs=2, **args), cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    first = run_cli("fit", *quick_args(tmp_path / "b", num_epochs=1, **args), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("fit", *quick_args(tmp_path / "b", num_epochs=2, load_epoch=1, **args), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(tmp_path / "a/model/mnist-0002.ckpt", tmp_path / "b/model/mnist-0002.ckpt", 1e-5, 1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(tmp_path: Path, **overrides) -> list[subprocess.Popen]:
    """Two `fit --kv-store dist_sync` workers started by hand, as on two machines (env vars as launchers set them)."""
    port = _free_port()
    args = quick_args(tmp_path, kv_store="dist_sync", num_examples=60000, num_epochs=3, disp_batches=5, threads=1,
                      batch_size=32, **overrides)
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "NODE_RANK": str(rank), "LOCAL_RANK": "0"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lit_imgcls", "fit", *args], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ))
    return procs


def _wait_for_training(proc: subprocess.Popen, lines: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if "Epoch[0] Batch" in line:
            return
        assert time.monotonic() < deadline, "".join(lines)
    pytest.fail("rank 0 ended before training started:\n" + "".join(lines))


def _finish(proc: subprocess.Popen, lines: list[str], timeout: float) -> tuple[int, float, str]:
    start = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker still running after {timeout} s:\n" + "".join(lines) + out)
    return proc.returncode, time.monotonic() - start, "".join(lines) + out


@pytest.mark.slow
def test_killed_worker_stops_the_other_with_its_rank_named(tmp_path):
    rank0, rank1 = _start_workers(tmp_path)
    lines: list[str] = []
    try:
        _wait_for_training(rank0, lines)
        rank1.kill()
        code, seconds, out = _finish(rank0, lines, timeout=60)
    finally:
        for p in (rank0, rank1):
            p.kill()
            p.wait()
    assert code == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("lit-imgcls: error: worker rank 0") and "no heartbeat from rank 1" in last, out
    assert "Traceback" not in out


@pytest.mark.slow
def test_stuck_worker_times_out_with_its_rank_named(tmp_path):
    rank0, rank1 = _start_workers(tmp_path, dist_timeout=10)
    lines: list[str] = []
    try:
        _wait_for_training(rank0, lines)
        rank1.send_signal(signal.SIGSTOP)  # alive, holding its sockets open, answering nothing
        code, seconds, out = _finish(rank0, lines, timeout=60)
    finally:
        for p in (rank0, rank1):
            p.kill()
            p.wait()
    assert code == 1, out
    last = out.strip().splitlines()[-1]
    assert "no heartbeat from rank 1" in last, out


def test_fit_runs_unchanged_under_torchrun(tmp_path):
    """torchrun's environment (TORCHELASTIC_*, LOCAL_WORLD_SIZE) is read by Lightning and by fit's device count."""
    port = str(_free_port())
    args = quick_args(tmp_path, kv_store="dist_sync", batch_size=32, threads=1, num_examples=1000)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--master-port", port,
         "-m", "lit_imgcls", "fit", *args],
        cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "MEMBER: 2/2" in out and proc.stdout.count("final:") == 1
    assert load_checkpoint(tmp_path / "model/mnist-0001.ckpt")["global_step"] == 1000 // 2 // 32
