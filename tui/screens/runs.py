"""Runs: every run folder under the runs folder, with status, best accuracy and duration; compare two; open one's
evaluation report."""

from __future__ import annotations

import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual.worker import get_current_worker

from tui.runs import LIVE, RunState, RunWatch, discover_runs, fmt, fmt_seconds, relative
from tui.screens.report import ReportScreen
from tui.widgets.plot import COLOURS, ComparePlot

REFRESH_S = 2.0


def run_row(state: RunState, runs_dir: Path) -> tuple[str, ...]:
    recipe = state.recipe
    status = state.status()
    epochs = f"{state.epochs_done}/{state.num_epochs}" if state.num_epochs else str(state.epochs_done)
    return (relative(state.folder, runs_dir), status, fmt(state.best_val_acc), fmt(state.last_val_acc), epochs,
            fmt_seconds(state.duration()), str(recipe.get("network", "-")), str(recipe.get("dataset", "-")))


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "monitor", "Monitor", show=False),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("e", "report", "Report"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[Path, RunState] = {}
        self.order: list[Path] = []
        self.marked: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="runs"):
            yield Label("", id="runs-title", classes="section-title")
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            yield Static("[dim]Enter: monitor   Space: mark two runs   c: compare them   e: evaluation report[/dim]",
                         id="runs-hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_columns("", "run", "status", "best val acc", "last val acc", "epochs", "duration", "network", "dataset")
        self.query_one("#runs-title", Label).update(f"[b]runs under {self.app.runs_dir}[/b]")
        self.scan()

    def on_screen_resume(self) -> None:
        self.scan()

    def action_refresh(self) -> None:
        self.scan()

    @work(thread=True, exclusive=True, group="runs")
    def scan(self) -> None:
        """Reads the runs (each file from where the last scan stopped), then again every REFRESH_S while shown."""
        worker = get_current_worker()
        watches: dict[Path, RunWatch] = {}
        runs_dir = Path(self.app.runs_dir)
        last = None
        while not worker.is_cancelled:
            folders = discover_runs(runs_dir)
            for folder in folders:
                watches.setdefault(folder, RunWatch(folder)).poll()
            rows = [(f, run_row(watches[f].state, runs_dir)) for f in folders]
            states = {f: watches[f].state for f in folders}
            if rows != last:
                last = rows
                try:
                    self.app.call_from_thread(self._show, rows, states)
                except Exception:
                    return
            live = any(r[1][1] in LIVE for r in rows)
            for _ in range(int(REFRESH_S / 0.1) if live else 10 * int(REFRESH_S / 0.1)):
                if worker.is_cancelled or not self.is_current:
                    return
                time.sleep(0.1)

    def _show(self, rows, states) -> None:
        self.states = states
        self.order = [f for f, _ in rows]
        table = self.query_one("#runs-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for folder, row in rows:
            table.add_row("*" if folder in self.marked else "", *row, key=str(folder))
        if rows:
            table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
        if not rows:
            self.query_one("#runs-hint", Static).update(f"[dim]no runs under {self.app.runs_dir} yet[/dim]")

    def _current(self) -> Path | None:
        table = self.query_one("#runs-table", DataTable)
        if not self.order or table.row_count == 0:
            return None
        return self.order[min(table.cursor_row, len(self.order) - 1)]

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self) -> None:
        self.action_monitor()

    def action_monitor(self) -> None:
        folder = self._current()
        if folder is not None:
            launched = next((r for r in self.app.launched if r.folder == folder), None)
            self.app.monitor(folder=folder, launched=launched)

    def action_report(self) -> None:
        folder = self._current()
        if folder is not None:
            self.app.push_screen(ReportScreen(folder, Path(self.app.runs_dir)))

    def action_mark(self) -> None:
        folder = self._current()
        if folder is None:
            return
        if folder in self.marked:
            self.marked.remove(folder)
        else:
            self.marked = (self.marked + [folder])[-2:]
        table = self.query_one("#runs-table", DataTable)
        for i, f in enumerate(self.order):
            table.update_cell_at((i, 0), "*" if f in self.marked else "")

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.notify("mark two runs with Space first", severity="warning")
            return
        a, b = (self.states.get(f) for f in self.marked)
        if a is None or b is None:
            return
        self.app.push_screen(CompareScreen(a, b, Path(self.app.runs_dir)))


# (caption, events key, per epoch): each a chart with both runs' curves on the same axes, x the optimizer step
COMPARED = (("val acc/epoch", "val_acc", True), ("train acc", "train_acc", False),
            ("samples/s", "samples_per_sec", False))


class CompareScreen(ModalScreen):
    """Two runs on the same charts (A blue, B orange) and their per-epoch validation accuracy side by side."""

    BINDINGS = [Binding("escape,q,c", "app.pop_screen", "Close")]

    def __init__(self, a: RunState, b: RunState, runs_dir: Path) -> None:
        super().__init__()
        self.pair = (a, b)
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="compare-box"):
            yield Label("[b]compare runs[/b]  (Esc closes)", classes="section-title")
            for i, state in enumerate(self.pair):
                yield Static(f"[b][{COLOURS[i]}]{'AB'[i]}[/]: {relative(state.folder, self.runs_dir)}[/b]  {state.status()}  "
                             f"best {fmt(state.best_val_acc)}  {fmt_seconds(state.duration())}",
                             classes="compare-head")
            for name, key, _ in COMPARED:
                yield ComparePlot(name, ".1f" if key == "samples_per_sec" else ".4f", id=f"cmp-{key}")
            yield DataTable(id="compare-table", cursor_type="row")

    def on_mount(self) -> None:
        for _, key, per_epoch in COMPARED:
            series = [state.epoch_series(key) if per_epoch else state.series(key) for state in self.pair]
            self.query_one(f"#cmp-{key}", ComparePlot).update(series)
        table = self.query_one("#compare-table", DataTable)
        table.add_columns("epoch", "A val acc", "B val acc", "difference B-A")
        a, b = self.pair
        n = max(len(a.epochs), len(b.epochs))
        for e in range(n):
            va = a.epochs[e].get("val_acc") if e < len(a.epochs) else None
            vb = b.epochs[e].get("val_acc") if e < len(b.epochs) else None
            diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
            table.add_row(str(e), fmt(va), fmt(vb), fmt(diff, "+.4f"))
