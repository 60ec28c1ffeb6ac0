"""One writer at a time: a model prefix and a pack folder are held by one process (lit_imgcls.locks), which removes
its lock file in every ending; the lock never writes into a file that is not its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from lit_imgcls.data.encode import EncodeOptions
from lit_imgcls.data.manifest import LOCK, MANIFEST
from lit_imgcls.data.pack import PackOptions, pack_dataset
from lit_imgcls.errors import UsageError
from lit_imgcls.locks import ProcessLock

from conftest import quick_args, run_cli

HOLD = """
import sys
from lit_imgcls.locks import ProcessLock
assert ProcessLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def _wait_for_pid_in(path: Path, pid: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if path.read_text() == str(pid):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} never named process {pid}")


def test_two_fits_with_one_model_prefix_at_once_the_second_is_refused(tmp_path):
    """The issue's example: both runs used to report `checkpoint .../mnist-0001.ckpt`, which held one run's weights.
    The first run is paused (SIGSTOP) while it holds the prefix, so the second surely meets it."""
    args = quick_args(tmp_path, num_examples=256, threads=1)
    lock = tmp_path / "model" / ".mnist.lock"
    first = subprocess.Popen([sys.executable, "-m", "lit_imgcls", "fit", *args], cwd=tmp_path,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        _wait_for_pid_in(lock, first.pid, first)
        first.send_signal(signal.SIGSTOP)
        second = run_cli("fit", *args, "--run-dir", str(tmp_path / "runs2"), cwd=tmp_path, timeout=120)
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"lit-imgcls: error: another lit-imgcls run (process {first.pid}) is writing checkpoints under model_prefix "
        f"{tmp_path}/model/mnist now: wait for it to end, or choose another --model-prefix"]
    assert not (tmp_path / "runs2").exists(), "the refused run started a run folder"
    assert first.returncode == 0, err[-2000:]
    assert f"checkpoint {tmp_path}/model/mnist-0001.ckpt" in out
    assert not lock.exists(), "the finished run left its lock file"


def test_a_process_lock_is_one_process_at_a_time_and_freed_by_its_holders_death(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = ProcessLock(path)
        assert not second.acquire() and second.holder() == str(holder.pid)
        assert path.read_text() == str(holder.pid)  # a refused lock writes nothing
    finally:
        holder.kill()  # kill -9: no release runs, its file stays, its lock goes with it
        holder.wait(timeout=30)
    assert path.exists()
    with ProcessLock(path) as lock:
        assert lock.acquire() and path.read_text() == str(os.getpid())
    assert not path.exists()


@pytest.mark.parametrize("what", ["link", "fifo", "folder", "their file"])
def test_a_lock_never_opens_what_is_not_its_own_file(tmp_path, what):
    path, target = tmp_path / ".mnist.lock", tmp_path / "notes.txt"
    target.write_text("my notes\n")
    if what == "link":
        path.symlink_to(target)
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "folder":
        path.mkdir()
    else:
        path.write_text("my notes\n")
    lock = ProcessLock(path)
    with pytest.raises(OSError, match="not a lock file lit-imgcls wrote"):
        lock.acquire()
    assert not lock.held and target.read_text() == "my notes\n"
    assert path.is_symlink() or path.is_dir() or path.exists()
    if what == "their file":
        assert path.read_text() == "my notes\n"


def test_a_fit_whose_lock_name_is_taken_by_a_link_is_one_line(tmp_path, capsys):
    from lit_imgcls.cli import main

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / ".mnist.lock").symlink_to(tmp_path / "elsewhere")
    assert main(["fit", *quick_args(tmp_path, num_examples=256)]) == 2  # the CLI's entry point, in this process
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lit-imgcls: error: cannot lock model_prefix {tmp_path}/model/mnist")
    assert "not a lock file lit-imgcls wrote" in lines[0] and not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def images(tmp_path) -> Path:
    for name in ("a", "b"):
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "src" / name / f"{i}.png")
    return tmp_path / "src"


def test_a_pack_leaves_no_lock_file_in_any_ending(tmp_path, images):
    out = tmp_path / "out"
    pack_dataset(str(images), str(out), PackOptions(), EncodeOptions())  # success
    assert (out / MANIFEST).exists() and not (out / LOCK).exists()
    pack_dataset(str(images), str(out), PackOptions(), EncodeOptions(), list_only=True)  # lists beside it
    assert (out / "train.lst").exists() and not (out / LOCK).exists()

    theirs = tmp_path / "theirs"
    (theirs / "wds").mkdir(parents=True)
    with pytest.raises(UsageError, match="which no lit-imgcls pack wrote"):  # refusal
        pack_dataset(str(images), str(theirs), PackOptions(), EncodeOptions())
    assert sorted(p.name for p in theirs.iterdir()) == ["wds"]

    for f in images.glob("*/*.png"):
        f.write_bytes(b"not an image")
    with pytest.raises(UsageError, match="nothing to pack"):  # error inside the pack
        pack_dataset(str(images), str(out), PackOptions(), EncodeOptions())
    assert sorted(p.name for p in out.iterdir()) == [".lit-imgcls-lists", "classes.txt", MANIFEST, "train.lst", "wds"]


def test_a_pack_into_a_folder_whose_lock_name_is_taken_is_one_line(tmp_path, images):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).symlink_to(tmp_path / "target")
    res = run_cli("dataset", "pack", str(images), str(out), cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert "not a lock file lit-imgcls wrote" in res.stderr and not (tmp_path / "target").exists()
    assert sorted(p.name for p in out.iterdir()) == [LOCK]


@pytest.mark.parametrize("env, zero", [
    ({}, True), ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"RANK": "1"}, False),  # torchrun
    ({"NODE_RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, False),  # lit-imgcls launch
    ({"LOCAL_RANK": "1"}, False),  # the processes Lightning starts on one machine
])
def test_only_global_rank_zero_holds_the_prefix(monkeypatch, env, zero):
    from lit_imgcls.ranks import is_global_zero

    for key in ("RANK", "GROUP_RANK", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_global_zero() is zero


@pytest.mark.slow
def test_launch_workers_sharing_a_prefix_do_not_lock_each_other_out(tmp_path):
    """Two `launch` workers on one host write under one prefix: rank 0 holds it, rank 1 takes no lock."""
    args = quick_args(tmp_path, kv_store="dist_sync", batch_size=32, threads=1, num_examples=512)
    res = run_cli("launch", "-n", "2", "--", sys.executable, "-m", "lit_imgcls", "fit", *args, cwd=tmp_path,
                  timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("final:") == 1 and (tmp_path / "model/mnist-0001.ckpt").exists()
    assert not (tmp_path / "model/.mnist.lock").exists()
