"""Run folders and their events, in plain Python (no Textual): what the TUI's screens show.

A run folder is the logger's ``runs/<dataset>-<network>/version_N``; ``events.jsonl`` in it is written by
:class:`lit_imgcls.callbacks.run_events.RunEvents`. Files are read incrementally from a byte offset, so a
watcher of a fast-logging run only parses what is new; a line still being written is kept for the next read.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

EVENTS_FILE = "events.jsonl"
LIVE = ("running", "starting")


class EventTail:
    """Reads the new complete lines of an events file, from where the last read stopped."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" after a complete last line
        events = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    # A child that exited but was not reaped yet is a zombie: not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class RunState:
    """What the events of one run say so far; :meth:`feed` it new events."""

    folder: Path
    start: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    logs: list[str] = field(default_factory=list)
    last_t: float | None = None

    def feed(self, events: Iterable[dict[str, Any]]) -> None:
        for e in events:
            kind = e.get("type")
            if isinstance(e.get("t"), (int, float)):
                self.last_t = float(e["t"])
            if kind == "start":
                if self.start is not None:  # a resumed run appends to the same folder only via a new version
                    self.steps, self.epochs, self.end = [], [], None
                self.start = e
            elif kind == "step":
                self.steps.append(e)
            elif kind == "epoch":
                self.epochs.append(e)
            elif kind == "end":
                self.end = e
            elif kind == "log" and e.get("text"):
                self.logs.append(str(e["text"]))

    # -- derived values ------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        pid = (self.start or {}).get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def recipe(self) -> dict[str, Any]:
        return dict((self.start or {}).get("recipe") or {})

    def status(self, alive: bool | None = None) -> str:
        """finished, failed, stopped (from the end event), running (its process lives), died, or no events."""
        if self.end is not None:
            return str(self.end.get("status", "finished"))
        if self.start is None:
            return "no events"
        if alive is None:
            alive = pid_alive(self.pid)
        return "running" if alive else "died"

    @property
    def num_epochs(self) -> int | None:
        n = (self.start or {}).get("num_epochs")
        return n if isinstance(n, int) else None

    @property
    def total_steps(self) -> int | None:
        n = (self.start or {}).get("total_steps")
        return n if isinstance(n, int) and n > 0 else None

    @property
    def step(self) -> int:
        last = [e.get("step") for e in (self.steps[-1:] + self.epochs[-1:]) if isinstance(e.get("step"), int)]
        return max(last) if last else int((self.start or {}).get("start_step") or 0)

    @property
    def epochs_done(self) -> int:
        return len(self.epochs) + int((self.start or {}).get("start_epoch") or 0)

    def val_accs(self) -> list[float]:
        return [e["val_acc"] for e in self.epochs if isinstance(e.get("val_acc"), (int, float))]

    @property
    def best_val_acc(self) -> float | None:
        accs = self.val_accs()
        return max(accs) if accs else None

    @property
    def last_val_acc(self) -> float | None:
        accs = self.val_accs()
        return accs[-1] if accs else None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a step-event key (train_acc, train_loss, samples_per_sec, lr)."""
        xs, ys = [], []
        for e in self.steps:
            v = e.get(key)
            if isinstance(v, (int, float)):
                xs.append(int(e.get("step") or 0))
                ys.append(float(v))
        return xs, ys

    def epoch_series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of an epoch-event key (val_acc, val_loss, train_acc, ...)."""
        xs, ys = [], []
        for e in self.epochs:
            v = e.get(key)
            if isinstance(v, (int, float)):
                xs.append(int(e.get("step") or 0))
                ys.append(float(v))
        return xs, ys

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from the start event to the end event, or to ``now`` (default: the clock) while it runs."""
        if self.start is None or not isinstance(self.start.get("t"), (int, float)):
            return None
        if self.end is not None and isinstance(self.end.get("t"), (int, float)):
            stop = float(self.end["t"])
        elif now is not None:
            stop = now
        elif self.status() == "running":
            stop = time.time()
        else:
            stop = self.last_t or float(self.start["t"])
        return max(stop - float(self.start["t"]), 0.0)

    def eta(self) -> float | None:
        """Seconds left: the optimizer steps still to take at this process's pace so far (0 once ended; None when
        unknown). ``total_steps`` and every ``step`` count the whole run, so a resumed run's steps before its start
        are neither work left nor part of its pace."""
        if self.end is not None:
            return 0.0
        total = self.total_steps
        if not total or not self.steps or self.start is None:
            return None
        first_step = int(self.start.get("start_step") or 0)
        last = self.steps[-1]
        done = int(last.get("step") or 0) - first_step
        spent = float(last.get("t", 0.0)) - float(self.start.get("t", 0.0))
        if done <= 0 or spent <= 0:
            return None
        return max(total - self.step, 0) * spent / done

    def progress(self) -> float | None:
        """The run's fraction done, 0..1: its optimizer step over ``total_steps`` (a resumed run starts part-way)."""
        total = self.total_steps
        if self.end is not None and self.end.get("status") == "finished":
            return 1.0
        if not total:
            return None
        return min(max(self.step / total, 0.0), 1.0)

    @property
    def epoch(self) -> int:
        """The epoch shown beside the step (1-based): the one being trained, or the one a stop or a failure ended
        in; once finished, the last. The same number while it runs and after it stopped there."""
        done = self.epochs_done
        if self.end is not None and self.end.get("status") == "finished":
            return done
        n = self.num_epochs
        return min(done + 1, n) if n else done + 1

    def last_step(self) -> dict[str, Any]:
        return self.steps[-1] if self.steps else {}

    def log_lines(self, n: int = 20) -> list[str]:
        """Speedometer-like lines made from the events, for runs whose output the TUI did not capture."""
        out = []
        items = sorted(self.steps[-n:] + self.epochs[-n:], key=lambda e: (e.get("t", 0), e.get("type") == "epoch"))
        for e in items[-n:]:
            if e.get("type") == "step":
                out.append(
                    f"Epoch[{e.get('epoch')}] step {e.get('step')}  {fmt(e.get('samples_per_sec'), '.1f')} samples/s  "
                    f"acc={fmt(e.get('train_acc'), '.4f')}  loss={fmt(e.get('train_loss'), '.4f')}  lr={fmt(e.get('lr'), '.4g')}"
                )
            else:
                out.append(
                    f"Epoch[{e.get('epoch')}] done: val acc={fmt(e.get('val_acc'), '.4f')}  "
                    f"train acc={fmt(e.get('train_acc'), '.4f')}  time={fmt(e.get('epoch_time'), '.1f')} s"
                )
        if self.end is not None:
            extra = self.end.get("error") or self.end.get("checkpoint") or ""
            out.append(f"end: {self.end.get('status')} {extra}".rstrip())
        return out[-n:]


def fmt(value: Any, spec: str = ".4f", missing: str = "-") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else missing


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunWatch:
    """A run folder and a tail on its events: :meth:`poll` returns the new events and feeds them to ``state``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.state = RunState(self.folder)
        self.tail = EventTail(self.folder / EVENTS_FILE)

    def poll(self) -> list[dict[str, Any]]:
        events = self.tail.read()
        self.state.feed(events)
        return events


def load_run(folder: str | os.PathLike) -> RunState:
    watch = RunWatch(folder)
    watch.poll()
    return watch.state


def discover_runs(root: str | os.PathLike) -> list[Path]:
    """Run folders under ``root`` (or ``root`` itself): every folder holding events.jsonl or metrics.csv."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if EVENTS_FILE in filenames or "metrics.csv" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in _split_digits(str(p))])


def _split_digits(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        if cur and ch.isdigit() != cur[-1].isdigit():
            out.append(cur)
            cur = ""
        cur += ch
    return out + ([cur] if cur else [])


def find_run_by_pid(root: str | os.PathLike, pid: int) -> Path | None:
    """The run folder whose start event names ``pid`` (the run a launched process made)."""
    for folder in discover_runs(root):
        path = folder / EVENTS_FILE
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            if json.loads(first).get("pid") == pid:
                return folder
        except (OSError, ValueError, AttributeError):
            continue
    return None


def relative(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to ``base`` when below it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)
