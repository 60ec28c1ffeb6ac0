"""Report: a run's evaluation report (``lit-imgcls score --report``): its figures, the per-class table and the
confusion matrix; when the run has none, ``m`` scores its newest checkpoint to make one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, ProgressBar, Static
from textual.worker import get_current_worker

from tui.launcher import command_line, start
from tui.reports import Report, find_reports, newest_checkpoint, row_shares, run_checkpoints, score_args
from tui.runs import fmt, relative

MATRIX_MAX_CLASSES = 20  # above this a grid no longer fits a terminal: the worst confusions are listed instead
CLASS_COLUMNS = ("class", "support", "precision", "recall", "F1")
# background of a matrix cell at a share of 1 of its row: right (the diagonal) green, confused red; 0 is no shade
RIGHT, WRONG, BASE = (24, 140, 72), (190, 40, 40), (40, 40, 40)


def shade(share: float, right: bool) -> str:
    """A Rich style whose background is BASE blended towards RIGHT or WRONG by ``share`` (0..1), from a quarter of
    the way for the smallest share (one image in many still shows); none at 0."""
    if share <= 0:
        return "dim"
    top = RIGHT if right else WRONG
    weight = 0.25 + 0.75 * min(share, 1.0)
    r, g, b = (round(lo + (hi - lo) * weight) for lo, hi in zip(BASE, top))
    return f"bold white on rgb({r},{g},{b})"


def matrix_table(names: list[str], matrix: list[list[int]]) -> Table:
    """The confusion matrix as a Rich table: rows are true classes, columns predicted ones, each count shaded by its
    share of the row."""
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("true \\ pred", justify="right", no_wrap=True, max_width=14)
    for name in names:
        table.add_column(Text(name), justify="right", no_wrap=True, max_width=8)
    for i, (name, row, shares) in enumerate(zip(names, matrix, row_shares(matrix))):
        table.add_row(Text(name, style="bold"), *(Text(str(v), style=shade(s, i == j))
                                                  for j, (v, s) in enumerate(zip(row, shares))))
    return table


def worst_table(worst: list[dict[str, Any]]) -> Table:
    """The worst confusions (true class, predicted class, images, share of the true class), largest first."""
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in (("true", "left"), ("predicted as", "left"), ("images", "right"), ("share", "right")):
        table.add_column(name, justify=justify, no_wrap=True, max_width=24)
    for w in worst:
        table.add_row(Text(str(w.get("true", "?"))), Text(str(w.get("predicted", "?"))), str(w["count"]),
                      Text(fmt(w["share"], ".1%"), style=shade(w["share"] or 0.0, False)))
    return table


def sorted_classes(classes: list[dict[str, Any]], column: str | None) -> list[tuple[int, dict[str, Any]]]:
    """(index, class row) in the report's order, or by ``column`` (a CLASS_COLUMNS name), largest first and the
    undefined (null) figures last."""
    rows = list(enumerate(classes))
    if column is None:
        return rows
    field = {"support": "support", "precision": "precision", "recall": "recall", "F1": "f1"}[column]
    return sorted(rows, key=lambda r: (r[1][field] is not None, r[1][field] or 0), reverse=True)


def figures(data: dict[str, Any], cwd: Path) -> str:
    """The report's header figures (each held together by no-break spaces so a narrow terminal wraps between
    them), then a line of what was scored: the checkpoint, the data set, the speed, EMA weights, flip averaging and a
    calibrated checkpoint's temperature."""
    out = [f"[b]top-1 {fmt(data['top1'])}[/b]"]
    if data.get("top_k"):
        out.append(f"top-{data['top_k']} {fmt(data['topk'])}")
    out += [f"balanced acc {fmt(data['balanced_accuracy'])}", f"macro F1 {fmt(data['macro_f1'])}",
            f"ECE {fmt(data['calibration'].get('ece'))}"]
    out.append(f"images {data['count']}")
    where = [f"checkpoint {escape(relative(data['checkpoint'], cwd))}"]
    if isinstance(data.get("dataset"), str):
        where.append(f"dataset {escape(data['dataset'])}")
    if isinstance(data.get("images_per_sec"), (int, float)):
        where.append(f"{data['images_per_sec']:.0f} images/s")
    where += [name for name in ("ema", "tta_flip") if data.get(name) is True]
    if data.get("temperature") not in (None, 1):  # as score prints it: 1 is an uncalibrated checkpoint
        where.append(f"calibrated at temperature {data['temperature']:.4f}")
    return "  ".join(f.replace(" ", "\u00a0") for f in out) + "\n[dim]" + "  ".join(where) + "[/dim]"


class ReportScreen(Screen):
    """A run's newest report (``n`` steps to older ones); ``m`` makes one from the run's newest checkpoint."""

    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("m", "make", "Make report"),
        Binding("n", "older", "Older report"),
    ]

    class Loaded(Message):
        """The run's checkpoints, its reports (newest first) and the notes on files skipped."""

        def __init__(self, checkpoints: list[Path], reports: list[Report], notes: list[str]) -> None:
            super().__init__()
            self.checkpoints, self.reports, self.notes = checkpoints, reports, notes

    class Scored(Message):
        """A ``score --report`` process ended: its exit code and its last output line (the error when it failed)."""

        def __init__(self, code: int, line: str) -> None:
            super().__init__()
            self.code, self.line = code, line

    def __init__(self, folder: Path, runs_dir: Path) -> None:
        super().__init__()
        self.folder = folder
        self.runs_dir = runs_dir
        self.checkpoints: list[Path] = []
        self.reports: list[Report] = []
        self.notes: list[str] = []
        self.index = 0
        self.loaded = False
        self.scoring = False
        self.error = ""
        self.sort_column: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="report"):
            yield Label(f"[b]report of {escape(relative(self.folder, self.runs_dir))}[/b]", id="report-title",
                        classes="section-title")
            yield Static("[dim]looking for reports...[/dim]", id="report-figures")
            with Horizontal(id="report-progress"):
                yield ProgressBar(total=None, id="report-bar", show_eta=False, show_percentage=False)
                yield Static("", id="report-status")
            yield Static("", id="report-notes")
            with Horizontal(id="report-body"):
                with Vertical(id="report-classes-box"):
                    yield Label("", id="report-classes-title", classes="report-pane-title")
                    yield DataTable(id="report-classes", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="report-matrix-box"):
                    yield Label("", id="report-matrix-title", classes="report-pane-title")
                    yield Static("", id="report-matrix")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#report-progress").display = False
        self.load()

    @work(thread=True, exclusive=True, group="report-load")
    def load(self) -> None:
        checkpoints = run_checkpoints(self.folder)
        reports, notes = find_reports(checkpoints)
        self.post_message(self.Loaded(checkpoints, reports, notes))

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        self.checkpoints, self.reports, self.notes = message.checkpoints, message.reports, message.notes
        self.index = 0
        self.loaded = True
        self.show()

    def show(self) -> None:
        """Fills the screen from ``reports[index]``, or says what to do when there is none."""
        title = f"[b]report of {escape(relative(self.folder, self.runs_dir))}[/b]"
        notes = [escape(note) for note in self.notes]
        if self.error:
            notes.insert(0, f"[red]score failed: {escape(self.error)}[/red]")
        table = self.query_one("#report-classes", DataTable)
        table.clear(columns=True)
        matrix = self.query_one("#report-matrix", Static)
        matrix_title = self.query_one("#report-matrix-title", Label)
        classes_title = self.query_one("#report-classes-title", Label)
        self.query_one("#report-body").display = bool(self.reports)  # no empty table while there is no report
        if not self.reports:
            self.query_one("#report-title", Label).update(title)
            ckpt = newest_checkpoint(self.checkpoints)
            text = (f"no report of this run yet: [b]m[/b] scores its newest checkpoint, "
                    f"{escape(relative(ckpt, Path.cwd()))}, into one" if ckpt is not None else
                    "no report of this run, and none of its checkpoints is on disk to score")
            self.query_one("#report-figures", Static).update(text)
            matrix.update("")
            matrix_title.update("")
            classes_title.update("")
        else:
            report = self.reports[self.index]
            data = report.data
            older = f"  ({self.index + 1} of {len(self.reports)}; n: older)" if len(self.reports) > 1 else ""
            where = escape(relative(report.path, Path.cwd()))
            self.query_one("#report-title", Label).update(f"{title}  {where}{older}")
            self.query_one("#report-figures", Static).update(figures(data, Path.cwd()))
            by = f"by {self.sort_column}" if self.sort_column else "click a header to sort"
            classes_title.update(f"[b]per class[/b]  [dim]({by})[/dim]")
            for name in CLASS_COLUMNS:
                table.add_column(name, key=name)
            for i, row in sorted_classes(data["classes"], self.sort_column):
                cells = (fmt(row[k]) for k in ("precision", "recall", "f1"))
                table.add_row(Text(row["name"]), Text(str(row["support"]), justify="right"),
                              *(Text(v, justify="right") for v in cells), key=str(i))
            names = [row["name"] for row in data["classes"]]
            if len(names) <= MATRIX_MAX_CLASSES:
                matrix_title.update("[b]confusion matrix[/b]  [dim](shade: share of the true class)[/dim]")
                matrix.update(matrix_table(names, data["confusion"]))
            else:
                matrix_title.update(f"[b]worst confusions[/b]  [dim]({len(names)} classes: too many for a grid)[/dim]")
                matrix.update(worst_table(data["worst_confusions"]) if data["worst_confusions"] else
                              "[dim]none: every image was classified right[/dim]")
        box = self.query_one("#report-notes", Static)
        box.update("\n".join(notes))
        box.display = bool(notes)

    def action_older(self) -> None:
        if len(self.reports) > 1:
            self.index = (self.index + 1) % len(self.reports)
            self.show()

    @on(DataTable.HeaderSelected, "#report-classes")
    def _sort(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column's header sorts the classes by it (figures largest first); again: back to class order."""
        key = str(event.column_key.value)
        self.sort_column = None if self.sort_column == key or key == "class" else key
        self.show()

    # -- making a report ---------------------------------------------------------------------------------------------
    def action_make(self) -> None:
        if self.scoring:
            self.notify("scoring already", severity="warning")
            return
        ckpt = newest_checkpoint(self.checkpoints)
        if ckpt is None:
            self.notify("none of this run's checkpoints is on disk", severity="error")
            return
        self.scoring, self.error = True, ""
        args = score_args(ckpt)
        self.query_one("#report-progress").display = True
        self.query_one("#report-status", Static).update(f"scoring...  {escape(command_line(args))}")
        self.score(args)

    @work(thread=True, exclusive=True, group="report-score")
    def score(self, args: list[str]) -> None:
        """Runs ``lit-imgcls score ... --report ...`` (its output in a log under the runs folder) to its end."""
        worker = get_current_worker()
        job = start(args, self.runs_dir, self.runs_dir / ".tui" / "logs")
        while job.poll() is None:
            if worker.is_cancelled:  # the screen closed: the process ends by itself, its report appears later
                return
            time.sleep(0.2)
        lines = [line.strip() for line in job.log_tail(50) if line.strip()]
        self.post_message(self.Scored(job.poll() or 0, lines[-1] if lines else ""))

    @on(Scored)
    def _scored(self, message: Scored) -> None:
        self.scoring = False
        self.query_one("#report-progress").display = False
        if message.code != 0:
            self.error = message.line or f"exit {message.code}"
            self.show()
            return
        self.notify("report written", title="score")
        self.load()
