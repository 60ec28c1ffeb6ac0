"""Run events (events.jsonl) written by fit, the graceful SIGTERM stop, and tui.runs reading them back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, quick_args, run_cli
from tui.runs import EventTail, RunState, discover_runs, find_run_by_pid, load_run


def events_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def test_engine_never_imports_textual():
    code = ("import lit_imgcls.engine, lit_imgcls.cli, lit_imgcls.callbacks.run_events, sys; "
            "bad = [m for m in sys.modules if m.startswith(('textual', 'tui'))]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_event_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []  # no file yet
    with open(path, "w") as f:
        f.write('{"type": "start", "t": 1.0, "pid": 1}\n{"type": "step", "st')
    assert [e["type"] for e in tail.read()] == ["start"]
    with open(path, "a") as f:
        f.write('ep": 5, "t": 2.0}\nnot json\n{"type": "end", "status": "finished", "t": 3.0}\n')
    events = tail.read()
    assert [e["type"] for e in events] == ["step", "end"] and events[0]["step"] == 5
    assert tail.read() == []


def test_run_state_status_eta_and_best():
    state = RunState(Path("x"))
    assert state.status() == "no events"
    state.feed([{"type": "start", "t": 100.0, "pid": -1, "total_steps": 100, "num_epochs": 2, "start_step": 0}])
    assert state.status(alive=True) == "running" and state.status(alive=False) == "died"
    state.feed([{"type": "step", "t": 110.0, "step": 25, "train_acc": 0.5},
                {"type": "epoch", "t": 120.0, "epoch": 0, "step": 50, "val_acc": 0.9}])
    # The run stands at step 50 (the epoch event's): 50 steps left at the pace so far, 25 steps per 10 s.
    assert state.eta() == pytest.approx(20.0)
    assert state.progress() == pytest.approx(0.5)
    state.feed([{"type": "epoch", "t": 140.0, "epoch": 1, "step": 100, "val_acc": 0.95},
                {"type": "end", "t": 141.0, "status": "finished"}])
    assert state.status() == "finished" and state.best_val_acc == 0.95 and state.duration() == 41.0
    assert state.eta() == 0.0 and state.progress() == 1.0


@pytest.mark.slow
def test_fit_writes_events(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path, num_examples=2000, num_epochs=2, threads=1, disp_batches=5))
    assert res.returncode == 0, res.stderr[-2000:]
    [folder] = discover_runs(tmp_path / "runs")
    events = events_of(folder)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and events[-1]["status"] == "finished"
    start = events[0]
    assert start["recipe"]["network"] == "lenet" and start["num_epochs"] == 2 and start["total_steps"] > 0
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) >= 4 and all(e["samples_per_sec"] > 0 and 0 <= e["train_acc"] <= 1 for e in steps)
    assert all(b["step"] - a["step"] >= 5 for a, b in zip(steps, steps[1:]) if a["epoch"] == b["epoch"])
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[-1]["checkpoint"].endswith("mnist-0002.ckpt") and os.path.isfile(epochs[-1]["checkpoint"])
    assert f"val top-1 accuracy {epochs[-1]['val_acc']:.4f}" in res.stdout
    assert find_run_by_pid(tmp_path / "runs", start["pid"]) == folder
    state = load_run(folder)
    assert state.status() == "finished" and state.best_val_acc == max(e["val_acc"] for e in epochs)


@pytest.mark.slow
def test_sigterm_stops_after_the_step_with_a_checkpoint(tmp_path):
    args = quick_args(tmp_path, num_examples=20000, num_epochs=5, threads=1, disp_batches=5)
    proc = subprocess.Popen([sys.executable, "-m", "lit_imgcls", "fit", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.time() + 180
        folder = None
        while time.time() < deadline:
            found = discover_runs(tmp_path / "runs")
            if found and (found[0] / "events.jsonl").exists() and '"step"' in (found[0] / "events.jsonl").read_text():
                folder = found[0]
                break
            time.sleep(0.2)
        assert folder is not None, "no step event"
        os.kill(events_of(folder)[0]["pid"], signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    end = events_of(folder)[-1]
    assert end["type"] == "end" and end["status"] == "stopped", out[-2000:]
    assert end["checkpoint"] == str(tmp_path / "model" / "mnist-stop.ckpt")
    assert os.path.isfile(end["checkpoint"])
    assert not (tmp_path / "model" / "mnist-0001.ckpt").exists()  # no epoch file for the unfinished epoch
    # one clear line and the conventional exit code of a SIGTERM'd program
    assert proc.returncode == 143, out[-2000:]
    assert out.strip().splitlines()[-1].startswith("lit-imgcls: stopped by SIGTERM at step "), out[-2000:]
    assert f"checkpoint {end['checkpoint']}; rerun with --resume auto" in out and "Traceback" not in out
    from lit_imgcls.io import load_checkpoint

    ckpt = load_checkpoint(end["checkpoint"])
    assert ckpt["state_dict"] and ckpt["global_step"] >= 5
