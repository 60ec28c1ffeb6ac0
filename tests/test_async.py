"""kv_store dist_async (hivemind): real worker processes that never wait for each other."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import quick_args

pytest.importorskip("hivemind")

EPOCH_LINE = re.compile(r"Train-accuracy=\S+\s+Time cost=\S+ s\s+Speed: ([\d.]+) samples/sec\s+Validation-accuracy=([\d.]+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path, rank: int, world: int, port: int, slow_s: float = 0.0, **overrides) -> tuple[subprocess.Popen, Path]:
    """One worker as its own process, with the environment `lit-imgcls launch` sets; output goes to a file."""
    args = quick_args(tmp / f"w{rank}", kv_store="dist_async", threads=1, **overrides)
    env = {
        **os.environ, "PYTHONWARNINGS": "ignore", "WORLD_SIZE": str(world), "RANK": str(rank), "NODE_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LIT_IMGCLS_TEST_SLOW_STEP_S": str(slow_s),
        "LIT_IMGCLS_ASYNC_VERBOSE": "1",
    }
    log = tmp / f"w{rank}.log"
    # A file, not a pipe: hivemind's p2p daemon keeps inherited pipes open for a moment after the worker exits.
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lit_imgcls", "fit", *args], cwd=tmp, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _epoch(log: Path) -> tuple[float, float]:
    """(samples/s, validation accuracy) from the worker's Speedometer epoch line."""
    found = EPOCH_LINE.findall(log.read_text())
    assert found, log.read_text()[-3000:]
    speed, acc = found[-1]
    return float(speed), float(acc)


@pytest.mark.slow
def test_slow_worker_does_not_hold_back_fast_one(tmp_path):
    """Two workers, one 50 ms slower per step: the fast one keeps its speed, both learn MNIST (2 epochs of 6000), exit 0."""
    port = _free_port()
    common = {"num_examples": 12000, "num_epochs": 2, "batch_size": 64, "lr": 0.05, "disp_batches": 20}
    tic = time.monotonic()
    fast, fast_log = _start(tmp_path, 0, 2, port, **common)
    slow, slow_log = _start(tmp_path, 1, 2, port, slow_s=0.05, **common)
    assert _wait(fast, 240) == 0, fast_log.read_text()[-3000:]
    assert _wait(slow, 240) == 0, slow_log.read_text()[-3000:]
    assert time.monotonic() - tic < 240
    fast_speed, fast_acc = _epoch(fast_log)
    slow_speed, slow_acc = _epoch(slow_log)
    assert fast_speed >= 1.5 * slow_speed, (fast_speed, slow_speed)
    assert fast_acc >= 0.95 and slow_acc >= 0.95, (fast_acc, slow_acc)
    # the workers did average with each other (the counts are printed with LIT_IMGCLS_ASYNC_VERBOSE=1)
    averaged = [int(m) for log in (fast_log, slow_log) for m in re.findall(r"averaged (\d+),", log.read_text())]
    assert len(averaged) == 2 and sum(averaged) >= 1, averaged
    assert "final: val top-1 accuracy" in fast_log.read_text()


@pytest.mark.slow
def test_dead_worker_does_not_stall_the_survivor(tmp_path):
    """Rank 0 (which started the DHT) is killed mid-run; rank 1 finishes on its own within 60 s."""
    port = _free_port()
    common = {"num_examples": 12000, "batch_size": 64, "lr": 0.1, "disp_batches": 10}
    victim, _ = _start(tmp_path, 0, 2, port, slow_s=0.2, **common)  # ~20 s of training: alive when killed
    survivor, survivor_log = _start(tmp_path, 1, 2, port, slow_s=0.05, **common)
    deadline = time.monotonic() + 120
    while "Batch [" not in survivor_log.read_text():
        assert survivor.poll() is None, survivor_log.read_text()[-3000:]
        assert time.monotonic() < deadline, survivor_log.read_text()[-3000:]
        time.sleep(0.2)
    assert victim.poll() is None, "the victim finished before it could be killed; the test needs it alive"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    assert _wait(survivor, 60) == 0, survivor_log.read_text()[-3000:]
    assert time.monotonic() - killed < 60
    _, acc = _epoch(survivor_log)
    assert acc >= 0.9, acc


def test_dist_async_without_hivemind_names_the_extra(monkeypatch):
    from lit_imgcls.errors import UsageError
    from lit_imgcls.strategies import hivemind_async

    monkeypatch.setitem(sys.modules, "hivemind", None)  # import hivemind -> ImportError
    with pytest.raises(UsageError, match=r"pip install 'lit-imgcls\[async\]'"):
        hivemind_async.dist_async(1, "cpu")


def test_strategy_reports_worker_rank_for_sharding(monkeypatch):
    from lit_imgcls.errors import UsageError
    from lit_imgcls.strategies.hivemind_async import HivemindAsyncStrategy, dist_async

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("NODE_RANK", "2")
    strategy = dist_async(1, "cpu")
    assert isinstance(strategy, HivemindAsyncStrategy)
    assert (strategy.global_rank, strategy.world_size, strategy.is_global_zero) == (2, 3, True)
    monkeypatch.setenv("NODE_RANK", "3")
    with pytest.raises(UsageError, match="outside WORLD_SIZE"):
        dist_async(1, "cpu")
