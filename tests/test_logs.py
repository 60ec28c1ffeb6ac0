"""Logs people can read (issue 15, item 5): where output goes to a file or a pipe there are no progress-bar
redraws (no carriage return at all), only whole lines; in a terminal one bar that the Speedometer's lines do not
tear. Every command runs as a real process: with its stdout and stderr in one file, as `> log 2>&1` makes them, or
under a pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lit_imgcls.callbacks.progress import LogProgress
from lit_imgcls.terminal import LineProgress, is_terminal, progress

from conftest import REPO, run_cli_in_terminal

SPEEDOMETER = re.compile(r"Epoch\[\d+\] Batch \[\d+-\d+\]\tSpeed: [\d.]+ samples/sec\taccuracy=[\d.]+\tloss=[\d.]+"
                         r"\tlr=[\d.e-]+")
EPOCH_LINE = re.compile(r"Epoch\[\d+\] Train-accuracy=[\d.]+\tTime cost=[\d.]+ s\tSpeed: [\d.]+ samples/sec")
FINAL = "final: val top-1 accuracy "


def _logged(*args: str, cwd: Path, timeout: float = 600) -> tuple[int, str]:
    """Runs ``python -m lit_imgcls ARGS`` with stdout and stderr into one file, as ``> log 2>&1`` does; its exit
    code and the file's text (read as bytes: a text-mode read would turn a carriage return into a line end).
    Python's warnings are on, as they are for a user: they must not bring carriage returns either."""
    log = cwd / "log"
    with open(log, "wb") as f:
        proc = subprocess.run([sys.executable, "-m", "lit_imgcls", *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout,
                              env={**os.environ, "PYTHONWARNINGS": "default"})
    return proc.returncode, log.read_bytes().decode("utf-8", errors="replace")


def _no_redraws(text: str) -> None:
    """No carriage return, no cursor movement, no tqdm bar (its ``it/s]`` rate) anywhere in a log."""
    assert "\r" not in text, [line for line in text.split("\n") if "\r" in line][:3]
    assert "\x1b[A" not in text and "it/s]" not in text, text[-2000:]


def _short_fit(tmp: Path) -> list[str]:
    """The shipped MNIST recipe as it is (progress bar on), cut to one short epoch."""
    return ["fit", "--recipe", str(REPO / "recipes/mnist.yaml"), "--num-epochs", "1", "--num-examples", "2048",
            "--disp-batches", "8", "--model-prefix", str(tmp / "model/mnist"), "--run-dir", str(tmp / "runs")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """A short fit logged to a file: the folder it ran in (its checkpoint is model/mnist-0001.ckpt) and its log."""
    tmp = tmp_path_factory.mktemp("logged-fit")
    rc, log = _logged(*_short_fit(tmp), cwd=tmp)
    assert rc == 0, log[-3000:]
    return tmp, log


def test_fit_log_is_speedometer_lines_and_the_final_line(trained):
    _, log = trained
    _no_redraws(log)
    lines = log.splitlines()
    windows = [line for line in lines if SPEEDOMETER.fullmatch(line)]
    assert len(windows) == 4, log[-3000:]  # 2048 images in batches of 64: 32 steps, a line every 8
    assert sum(bool(EPOCH_LINE.match(line)) for line in lines) == 1, log[-3000:]
    assert lines[-1].startswith(FINAL) and "trained epoch 1 of 1" in lines[-1], log[-1000:]


def test_validate_log_has_no_bar(trained):
    tmp, _ = trained
    rc, log = _logged("validate", "--recipe", str(REPO / "recipes/mnist.yaml"), "--model-prefix",
                      str(tmp / "model/mnist"), cwd=tmp)
    assert rc == 0, log[-3000:]
    _no_redraws(log)
    assert re.search(r"^epoch 1: .*val/acc", log, re.M), log[-2000:]


def test_predict_and_score_logs_have_no_bar(trained, mnist_arrays, tmp_path):
    from PIL import Image

    tmp, _ = trained
    ckpt = tmp / "model/mnist-0001.ckpt"
    images = []
    for i in range(3):
        images.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(mnist_arrays["test_images"][i].squeeze()).save(images[-1])
    rc, log = _logged("predict", "--checkpoint", str(ckpt), *images, cwd=tmp_path)
    assert rc == 0, log[-3000:]
    _no_redraws(log)
    assert all(Path(p).name in log for p in images), log[-2000:]
    rc, log = _logged("score", "--checkpoint", str(ckpt), "--confusion-png", str(tmp_path / "c.png"), cwd=tmp_path)
    assert rc == 0, log[-3000:]
    _no_redraws(log)
    assert "top-1" in log, log[-2000:]


def test_pack_log_has_whole_progress_lines(tiny_pack, tmp_path):
    rc, log = _logged("dataset", "pack", str(tiny_pack.parent / "tree"), str(tmp_path / "pack"), "--format", "wds",
                      cwd=tmp_path)
    assert rc == 0, log[-3000:]
    _no_redraws(log)
    assert re.search(r"^packing .*: 6/6 images$", log, re.M), log  # the last progress line, which the TUI reads
    assert re.search(r"^packed ", log, re.M), log


def test_benchmark_log_has_no_bar(tmp_path):
    rc, log = _logged("benchmark", "train", "--networks", "lenet", "--steps", "3", "--warmup", "1",
                      "--batch-sizes", "16", "--threads", "1", cwd=tmp_path)
    assert rc == 0, log[-3000:]
    _no_redraws(log)
    assert re.search(r"^\| lenet +\| 16 ", log, re.M), log


# --- a terminal ----------------------------------------------------------------------------------------------------


def _screen(data: str) -> list[str]:
    """What a terminal shows (scrollback included) after ``data``: text overwrites at the cursor, ``\\r`` goes to
    the line's start, ``\\n`` to the next line's start, ``ESC [ n A`` up n lines, ``ESC [ K`` clears to the line's
    end; other escapes (colours) draw nothing."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b.|[\s\S]", data):
        if token.startswith("\x1b"):
            if token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
            elif token.endswith("K"):
                del lines[row][col:]
        elif token == "\r":
            col = 0
        elif token == "\n":  # the terminal's line end (\r\n, read as \n)
            row, col = row + 1, 0
            if row == len(lines):
                lines.append([])
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            line[col:col + 1] = [token]
            col += 1
    return ["".join(line).rstrip() for line in lines]


def test_speedometer_lines_are_whole_in_a_terminal(tmp_path):
    """Under a pseudo-terminal there is a bar (it redraws with carriage returns), and on the screen every
    Speedometer line is whole, a line of its own: the bar is cleared before each and redrawn below it, and
    Lightning's own lines (``Trainer.fit stopped``) go above the bar too."""
    res = run_cli_in_terminal(*_short_fit(tmp_path), cwd=tmp_path, env={"PYTHONWARNINGS": "default"}, merge=True)
    raw = res.stdout
    assert res.returncode == 0, raw[-3000:]
    assert re.search(r"\rEpoch 0: +\d+%\|", raw), "no bar was drawn in a terminal"
    screen = _screen(raw)
    windows = [line for line in screen if "Batch [" in line]
    assert len(windows) == 4, "\n".join(screen)
    for line in windows:
        assert SPEEDOMETER.fullmatch(line), repr(line)
    assert sum(bool(EPOCH_LINE.match(line)) for line in screen) == 1, "\n".join(screen)
    assert not any("`Trainer.fit` stopped" in line for line in screen), "\n".join(screen)  # filtered: final: says it
    assert screen[-2].startswith(FINAL) and screen[-1] == "", "\n".join(screen[-5:])
    bars = [line for line in screen if re.match(r"Epoch 0: +\d+%\|", line)]
    assert len(bars) == 1 and "32/32" in bars[0], "\n".join(screen)  # one bar, at its end


# --- the rule and the plain lines ------------------------------------------------------------------------------------


def test_is_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    with open(tmp_path / "f", "w") as f:
        assert not is_terminal(f)
    assert not is_terminal(io.StringIO())
    closed = open(tmp_path / "g", "w")
    closed.close()
    assert not is_terminal(closed)
    assert not is_terminal(object())
    main, child = pty.openpty()
    try:
        with open(child, "w", closefd=False) as tty:
            assert is_terminal(tty)
            monkeypatch.setenv("TERM", "dumb")  # a terminal that cannot move its cursor
            assert not is_terminal(tty)
    finally:
        os.close(main)
        os.close(child)


def test_line_progress_prints_whole_lines_now_and_then(monkeypatch):
    out = io.StringIO()
    with LineProgress(10, "packing src", every=3600, file=out) as bar:
        for _ in range(10):
            bar.update(1)
    assert out.getvalue() == "packing src: 10/10 images\n"  # a short job: the closing line only
    out = io.StringIO()
    with LineProgress(None, "scoring", every=0, file=out, final=False) as bar:
        bar.update(64)
        bar.update(64)
    assert out.getvalue() == "scoring: 64 images\nscoring: 128 images\n"
    out = io.StringIO()
    with pytest.raises(KeyError):
        with LineProgress(5, "packing src", every=3600, file=out) as bar:
            raise KeyError  # a job that failed says no "done" line
    assert out.getvalue() == ""
    assert isinstance(progress(5, "x", file=io.StringIO()), LineProgress)
    assert progress(5, "x", file=io.StringIO(), lines=False).disable  # machine-readable output: nothing at all


def _fake_trainer(**kw):
    base = dict(train_dataloader=[], num_training_batches=100, max_epochs=1, max_steps=-1, global_step=0,
                current_epoch=2, num_val_batches=[50], is_global_zero=True)
    return SimpleNamespace(**{**base, **kw})


def test_log_progress_speaks_only_after_a_quiet_spell(capsys):
    bar = LogProgress(quiet=3600)
    trainer = _fake_trainer()
    bar._trainer = trainer
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(40):
        bar.on_train_batch_end(trainer, None, None, None, i)
    bar.print("Epoch[2] Batch [0-40]\tSpeed: ...")
    assert capsys.readouterr().out == "Epoch[2] Batch [0-40]\tSpeed: ...\n"  # nothing of its own: not quiet long
    bar.quiet = 0
    bar.on_train_batch_end(trainer, None, None, None, 40)
    out = capsys.readouterr().out
    assert re.fullmatch(r"Epoch 2: 41/100 steps \(41%\), 00:\d\d elapsed, about 00:\d\d left\n", out), out
    bar.on_validation_start(trainer, None)
    bar.on_validation_batch_end(trainer, None, None, None, 9)
    out = capsys.readouterr().out
    assert re.fullmatch(r"Validation: 10/50 batches \(20%\), 00:\d\d elapsed, about 00:\d\d left\n", out), out
    bar.disable()  # another rank's copy
    bar.on_train_batch_end(trainer, None, None, None, 41)
    assert capsys.readouterr().out == ""
