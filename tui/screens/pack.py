"""Pack: fill in a `lit-imgcls dataset pack` command and run it, its output shown as it goes."""

from __future__ import annotations

import re
import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, ProgressBar, RichLog, Select, Static
from textual.worker import get_current_worker

from tui.launcher import Launched, command_line, start

# (flag, label, default, placeholder)
PROGRESS = re.compile(r": (\d+)/(\d+) images$")
PACK_FIELDS = [
    ("src", "source", "", "image folder, .lst/.csv list, or mnist / cifar10"),
    ("out", "output folder", "", "e.g. data/packed"),
    ("resize", "resize", "0", "shorter side in pixels; 0 keeps the size"),
    ("train-ratio", "train ratio", "1.0", ""),
    ("test-ratio", "test ratio", "0.0", ""),
    ("num-workers", "workers", "1", "processes"),
    ("shard-size", "shard size", "10000", "samples, or bytes like 500MB"),
    ("extra", "extra flags", "", "e.g. --recursive --pass-through"),
]


class PackScreen(Screen):
    BINDINGS = [Binding("ctrl+r", "run", "Run pack")]

    def __init__(self) -> None:
        super().__init__()
        self.job: Launched | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="pack"):
            for key, label, default, hint in PACK_FIELDS:
                with Horizontal(classes="field"):
                    yield Label(label, classes="field-label")
                    yield Input(default, placeholder=hint, id=f"pack-{key}", classes="wide-input")
            with Horizontal(classes="field"):
                yield Label("format", classes="field-label")
                yield Select([("wds", "wds"), ("ffcv", "ffcv"), ("both", "both")], value="wds", allow_blank=False,
                             id="pack-format", classes="field-input")
            yield Label("[b]command[/b]", classes="section-title")
            yield Static("", id="pack-command")
            with Horizontal(id="pack-buttons"):
                yield Button("Run pack", id="pack-run", variant="success")
                yield ProgressBar(total=1, id="pack-bar", show_eta=False)  # animated only while a pack runs
                yield Static("", id="pack-status")
            yield RichLog(id="pack-log", max_lines=1000, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._show_command()

    def args(self) -> list[str] | None:
        import shlex

        value = {key: self.query_one(f"#pack-{key}", Input).value.strip() for key, *_ in PACK_FIELDS}
        if not value["src"] or not value["out"]:
            return None
        args = ["dataset", "pack", value["src"], value["out"], "--format", str(self.query_one("#pack-format", Select).value)]
        for key, _, default, _ in PACK_FIELDS:
            if key in ("src", "out", "extra"):
                continue
            if value[key] and value[key] != default:
                args += [f"--{key}", value[key]]
        try:
            return args + shlex.split(value["extra"])
        except ValueError:
            return None

    @on(Input.Changed)
    @on(Select.Changed)
    def _show_command(self) -> None:
        args = self.args()
        self.query_one("#pack-command", Static).update(
            command_line(args) if args else "[dim]give a source and an output folder[/dim]")

    def action_run(self) -> None:
        args = self.args()
        if args is None:
            self.notify("give a source and an output folder", severity="error")
            return
        if self.job is not None and self.job.poll() is None:
            self.notify("a pack is running already", severity="warning")
            return
        self.job = start(args, self.app.runs_dir, self.app.runs_dir / ".tui" / "logs")
        self.query_one("#pack-log", RichLog).clear()
        self.query_one("#pack-bar", ProgressBar).update(total=None, progress=0)
        self.follow(self.job)

    @on(Button.Pressed, "#pack-run")
    def _run_pressed(self) -> None:
        self.action_run()

    @work(thread=True, exclusive=True, group="pack")
    def follow(self, job: Launched) -> None:
        worker = get_current_worker()
        shown = 0
        while not worker.is_cancelled:
            code = job.poll()
            lines = job.log_tail(1000)
            if len(lines) != shown or code is not None:
                new, shown = lines[shown:], len(lines)
                try:
                    self.app.call_from_thread(self._update, new, code)
                except Exception:
                    return
            if code is not None:
                return
            time.sleep(0.2)

    def _update(self, lines: list[str], code: int | None) -> None:
        log = self.query_one("#pack-log", RichLog)
        for line in lines:
            log.write(line)
            done = PROGRESS.search(line)  # "packing SRC: N/M images", a line a second from dataset pack
            if done:
                self.query_one("#pack-bar", ProgressBar).update(total=int(done[2]), progress=int(done[1]))
        status = self.query_one("#pack-status", Static)
        if code is None:
            status.update("running")
        else:
            bar = self.query_one("#pack-bar", ProgressBar)
            if code == 0:
                bar.update(total=bar.total or 1, progress=bar.total or 1)
            status.update("[green]done[/green]" if code == 0 else f"[red]failed (exit {code})[/red]")
