"""Monitor: one run, live. A worker tails its events.jsonl (and the output of a process started here) and posts
at most one merged update every 0.2 s, so a run that logs fast never floods the UI."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, ProgressBar, RichLog, Static
from textual.worker import get_current_worker

from tui.launcher import Launched, send
from tui.runs import RunState, RunWatch, fmt, fmt_seconds, relative
from tui.widgets.plot import MetricPlot

REFRESH_S = 0.2
EPOCH_COLUMNS = ("epoch", "step", "val acc", "val loss", "train acc", "time s", "samples/s", "checkpoint")


def summarize(state: RunState, launched: Launched | None, runs_dir: Path, alive: bool | None) -> dict[str, Any]:
    """Everything the screen shows, computed off the UI thread from a RunState the worker owns."""
    status = state.status(alive)
    if launched is not None and state.start is None:
        code = launched.poll()
        status = "starting" if code is None else f"exited {code} before training"
    last = state.last_step()
    epochs_total = state.num_epochs
    return {
        "title": relative(state.folder, runs_dir) if state.start or state.folder.exists() else "(waiting for the run folder)",
        "status": status,
        "pid": state.pid or (launched.pid if launched else None),
        "recipe": state.recipe,
        "epoch": f"{state.epoch}/{epochs_total}" if epochs_total else "-",
        "step": f"{state.step}/{state.total_steps}" if state.total_steps else str(state.step),
        "progress": state.progress(),
        "total": state.total_steps,
        "eta": fmt_seconds(state.eta()) if state.end is None else ("done" if status == "finished" else "-"),
        "duration": fmt_seconds(state.duration(None if status == "running" else (state.last_t or None))),
        "speed": fmt(last.get("samples_per_sec"), ".1f"),
        "lr": fmt(last.get("lr"), ".4g"),
        "val": fmt(state.last_val_acc),
        "best": fmt(state.best_val_acc),
        # (steps, values): every chart's x is the optimizer step, so the epoch charts line up with the step ones
        "train_acc": state.series("train_acc"),
        "train_loss": state.series("train_loss"),
        "speeds": state.series("samples_per_sec"),
        "lrs": state.series("lr"),
        "val_accs": state.epoch_series("val_acc"),
        "val_losses": state.epoch_series("val_loss"),
        "epochs": [
            (str(e.get("epoch")), str(e.get("step", "-")), fmt(e.get("val_acc")), fmt(e.get("val_loss")),
             fmt(e.get("train_acc")), fmt(e.get("epoch_time"), ".1f"), fmt(e.get("samples_per_sec"), ".0f"),
             checkpoint_name(e.get("checkpoint")))
            for e in state.epochs
        ],
        "end": state.end,
        "logs": [log_line(t) for t in (launched.log_tail(200) if launched is not None else state.log_lines(200))],
    }


def checkpoint_name(path: Any) -> str:
    """A checkpoint as the epoch table shows it: relative to the working folder when below it, a URL as it is."""
    if not isinstance(path, str) or not path:
        return "-"
    return path if "://" in path else relative(path, Path.cwd())


def log_line(text: str) -> str:
    """An output line as the log pane shows it: the Speedometer's tab-separated fields at 4-column stops, so its
    longest line (the epoch's, with validation accuracy) fits a 120-column terminal's pane on one row."""
    return text.expandtabs(4)


class MonitorScreen(Screen):
    AUTO_FOCUS = "#monitor-epochs"  # not the folder box: s, k, o, a are keys here
    BINDINGS = [
        Binding("s", "stop", "Stop (graceful)"),
        Binding("k", "kill", "Kill"),
        Binding("o", "open_folder", "Folder"),
        Binding("a", "attach", "Attach"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self.launched: Launched | None = None
        self.view: dict[str, Any] = {}
        self._target = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="monitor"):
            with Horizontal(id="monitor-attach"):
                yield Label("run folder", classes="field-label")
                yield Input(id="attach-path", placeholder="a run folder (runs/mnist-lenet/version_0); Enter attaches",
                            classes="wide-input")
            yield Static("[dim]no run: launch one (F2), pick one in Runs (F4) or type its folder above[/dim]",
                         id="monitor-head")
            with Horizontal(id="monitor-progress"):
                yield ProgressBar(total=100, id="monitor-bar", show_eta=False)
                yield Static("", id="monitor-stats")
            with Grid(id="monitor-plots"):
                yield MetricPlot("train acc", id="plot-train-acc")
                yield MetricPlot("train loss", id="plot-train-loss")
                yield MetricPlot("val acc/epoch", id="plot-val-acc")
                yield MetricPlot("samples/s", ".1f", id="plot-speed")
                yield MetricPlot("val loss/epoch", id="plot-val-loss")
                yield MetricPlot("lr", ".4g", id="plot-lr")
            with Vertical(id="monitor-bottom"):
                yield DataTable(id="monitor-epochs", cursor_type="row", zebra_stripes=True)
                yield RichLog(id="monitor-log", max_lines=500, wrap=True, markup=False)  # whole lines, wrapped
        yield Footer()

    def on_mount(self) -> None:
        self._epoch_columns([])

    def _epoch_columns(self, rows: list[tuple[str, ...]]) -> None:
        """Empties the epoch table and sizes its columns to ``rows``, the checkpoint's at its longest path.

        Textual sizes a column to its cells only after a first paint at the header's width, and keeps cells painted
        at that width (the checkpoint column showed 10 characters of each path): widths given up front hold."""
        table = self.query_one("#monitor-epochs", DataTable)
        table.clear(columns=True)
        for i, name in enumerate(EPOCH_COLUMNS):
            table.add_column(name, width=max([len(name)] + [len(row[i]) for row in rows]))

    def on_screen_resume(self) -> None:
        self.attach_target()

    def attach_target(self) -> None:
        target = self.app.monitor_target
        if target is None or target is self._target:
            return
        self._target = target
        folder, launched = target
        self.attach(folder, launched)

    def attach(self, folder: Path | None, launched: Launched | None = None) -> None:
        self.folder, self.launched, self.view = folder, launched, {}
        # nothing of the previous run stays on screen until the new one's first update
        self.query_one("#monitor-log", RichLog).clear()
        self._lines = None
        self._epoch_columns([])
        self.query_one("#monitor-bar", ProgressBar).update(total=100, progress=0)
        self.query_one("#monitor-stats", Static).update("")
        self.query_one("#monitor-head", Static).update("[dim]waiting for the run's first events[/dim]")
        for plot in self.query(MetricPlot):
            plot.update([])
        if folder is not None:
            self.query_one("#attach-path", Input).value = str(folder)
        self.tail(folder, launched)

    @work(thread=True, exclusive=True, group="tail")
    def tail(self, folder: Path | None, launched: Launched | None) -> None:
        """Polls the events file every REFRESH_S and posts one merged update when anything changed."""
        worker = get_current_worker()
        runs_dir = Path(self.app.runs_dir)
        watch = RunWatch(folder) if folder is not None else None
        last_key = None
        while not worker.is_cancelled:
            if watch is None and launched is not None:
                found = launched.find_folder()
                if found is not None:
                    watch = RunWatch(found)
            if watch is not None:
                watch.poll()
                state = watch.state
            else:
                state = RunState(Path(runs_dir / "(starting)"))
            alive = None
            if launched is not None:
                alive = launched.poll() is None
            view = summarize(state, launched, runs_dir, alive)
            # the elapsed time is in the key: a running run's clock ticks every second even between its events
            key = (len(state.steps), len(state.epochs), view["status"], view["duration"], len(view["logs"]),
                   view["logs"][-1:] if view["logs"] else None)
            if key != last_key:
                last_key = key
                try:
                    self.app.call_from_thread(self._show, view, watch.folder if watch else None)
                except Exception:  # the app is closing
                    return
            time.sleep(REFRESH_S)

    def _show(self, view: dict[str, Any], folder: Path | None) -> None:
        if folder is not None:
            self.folder = folder
        self.view = view
        recipe = view["recipe"]
        what = f"{recipe.get('network', '?')} on {recipe.get('dataset', '?')}" if recipe else ""
        pid = f"pid {view['pid']}" if (view["pid"] or 0) > 0 else ""
        colour = {"running": "green", "finished": "blue", "stopped": "yellow", "failed": "red", "died": "red"}.get(
            view["status"], "white")
        end = view["end"] or {}
        extra = f"  [red]{end['error']}[/red]" if end.get("error") else (
            f"  checkpoint {end['checkpoint']}" if end.get("checkpoint") else "")
        self.query_one("#monitor-head", Static).update(
            f"[b]{view['title']}[/b]  {what}  [{colour}]{view['status']}[/{colour}]  {pid}{extra}")
        bar = self.query_one("#monitor-bar", ProgressBar)
        if view["progress"] is not None:
            bar.update(total=100, progress=round(view["progress"] * 100, 1))
        # the accuracy first; each figure's name and value held together by no-break spaces, so a narrow terminal
        # wraps between figures, never inside one
        figures = [f"[b]val acc {view['val']}[/b] (best {view['best']})", f"epoch {view['epoch']}",
                   f"step {view['step']}", f"ETA {view['eta']}", f"elapsed {view['duration']}",
                   f"samples/s {view['speed']}", f"lr {view['lr']}"]
        self.query_one("#monitor-stats", Static).update("  ".join(f.replace(" ", "\u00a0") for f in figures))
        self.query_one("#plot-train-acc", MetricPlot).update(view["train_acc"][1], view["train_acc"][0])
        self.query_one("#plot-train-loss", MetricPlot).update(view["train_loss"][1], view["train_loss"][0])
        self.query_one("#plot-val-acc", MetricPlot).update(view["val_accs"][1], view["val_accs"][0])
        self.query_one("#plot-val-loss", MetricPlot).update(view["val_losses"][1], view["val_losses"][0])
        self.query_one("#plot-speed", MetricPlot).update(view["speeds"][1], view["speeds"][0])
        self.query_one("#plot-lr", MetricPlot).update(view["lrs"][1], view["lrs"][0])
        table = self.query_one("#monitor-epochs", DataTable)
        if table.row_count != len(view["epochs"]):
            self._epoch_columns(view["epochs"])
            for row in view["epochs"]:
                table.add_row(*row)
            table.scroll_end(animate=False)  # the newest epoch in sight when a long run's table scrolls
        log = self.query_one("#monitor-log", RichLog)
        lines = view["logs"]
        if lines != getattr(self, "_lines", None):
            self._lines = lines
            log.clear()
            # expand: RichLog otherwise wraps at its minimum width (78), not at the pane's
            log.write("\n".join(lines[-200:]), expand=True)

    # -- control ---------------------------------------------------------------------------------------------------
    def _pid(self) -> int | None:
        return self.view.get("pid") or (self.launched.pid if self.launched else None)

    def action_stop(self) -> None:
        self.notify(send(self._pid(), signal.SIGTERM) + " (graceful: checkpoint, then exit)")

    def action_kill(self) -> None:
        self.notify(send(self._pid(), signal.SIGKILL))

    def action_open_folder(self) -> None:
        if self.folder is None:
            self.notify("no run folder yet", severity="warning")
            return
        path = str(Path(self.folder).resolve())
        self.app.copy_to_clipboard(path)
        self.notify(path, title="run folder (copied)")

    def action_attach(self) -> None:
        self.query_one("#attach-path", Input).focus()

    @on(Input.Submitted, "#attach-path")
    def _attach_submitted(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip())
        if not path.is_dir():
            self.notify(f"no such folder: {path}", severity="error")
            return
        self.app.monitor_target = (path, None)
        self.attach_target()
        self.query_one("#monitor-epochs").focus()
