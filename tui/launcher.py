"""Starting and controlling ``lit-imgcls`` processes for the TUI, in plain Python: argv lists, never a shell."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tui.runs import find_run_by_pid, pid_alive


def fit_args(recipe_path: str, runs_dir: str, extra: str = "") -> list[str]:
    """The arguments after ``lit-imgcls``: fit with the saved recipe, logs under ``runs_dir``, then ``extra``."""
    return ["fit", "--recipe", str(recipe_path), "--run-dir", str(runs_dir), "--progress-bar", "false", *shlex.split(extra)]


def command_line(args: list[str]) -> str:
    """The command as a user types it (for a cluster job or another terminal)."""
    return shlex.join(["lit-imgcls", *args])


@dataclass
class Launched:
    """A process started here, its output file, and (once its start event appears) its run folder."""

    proc: subprocess.Popen
    args: list[str]
    log_path: Path
    runs_dir: Path
    started: float = field(default_factory=time.time)
    folder: Path | None = None
    label: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def find_folder(self) -> Path | None:
        if self.folder is None:
            self.folder = find_run_by_pid(self.runs_dir, self.pid)
        return self.folder

    def status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "running" if self.folder is not None else "starting"
        return "exited 0" if code == 0 else f"exited {code}"

    def log_tail(self, n: int = 200) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(size - 64_000, 0))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.replace("\r", "\n").splitlines()[-n:]


def start(args: list[str], runs_dir: str | os.PathLike, log_dir: str | os.PathLike, label: str = "") -> Launched:
    """Starts ``python -m lit_imgcls ARGS`` (the same environment as the TUI) with its output in a log file."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while (log_dir / f"{stamp}-{n}.log").exists():
        n += 1
    log_path = log_dir / f"{stamp}-{n}.log"
    out = open(log_path, "wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lit_imgcls", *args], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,  # a Ctrl+C in the TUI leaves runs alone
        )
    finally:
        out.close()
    return Launched(proc, list(args), log_path, Path(runs_dir), label=label or command_line(args))


def send(pid: int | None, sig: int) -> str:
    """Sends ``sig`` to a run's process; returns what happened, in words."""
    name = signal.Signals(sig).name
    if not pid:
        return "no process id known for this run"
    if not pid_alive(pid):
        return f"process {pid} is not running"
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return f"process {pid} is not running"
    except PermissionError:
        return f"not allowed to signal process {pid}"
    return f"sent {name} to process {pid}"
