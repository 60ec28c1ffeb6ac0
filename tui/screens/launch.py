"""Launch: start the saved recipe as `lit-imgcls fit` processes, see the exact command, control the runs."""

from __future__ import annotations

import signal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from tui.launcher import command_line, fit_args, send
from tui.runs import relative


class LaunchScreen(Screen):
    AUTO_FOCUS = "#launch-table"
    BINDINGS = [
        Binding("ctrl+r", "start", "Start run"),
        Binding("enter", "monitor", "Monitor", show=False),
        Binding("s", "stop", "Stop"),
        Binding("k", "kill", "Kill"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="launch"):
            with Horizontal(classes="field"):
                yield Label("recipe", classes="field-label")
                yield Input(id="launch-recipe", placeholder="save one in the Recipe builder (F1)", classes="wide-input")
            with Horizontal(classes="field"):
                yield Label("extra flags", classes="field-label")
                yield Input(id="launch-extra", placeholder="e.g. --threads 1 --disp-batches 5", classes="wide-input")
            yield Label("[b]command[/b] (also for a cluster job script)", classes="section-title")
            yield Static("", id="launch-command")
            with Horizontal(id="launch-buttons"):
                yield Button("Start run", id="launch-start", variant="success")
            yield Label("[b]runs started here[/b]", classes="section-title")
            yield DataTable(id="launch-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#launch-table", DataTable)
        table.add_columns("pid", "status", "run folder", "command")
        self.set_interval(1.0, self.refresh_table)

    def on_screen_resume(self) -> None:
        self.query_one("#launch-recipe", Input).value = self.app.recipe_path or ""
        self.query_one("#launch-extra", Input).value = self.app.extra_args
        self.refresh_table()
        self._show_command()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id == "launch-extra":
            self.app.extra_args = event.value
        self._show_command()

    def _args(self) -> list[str] | None:
        recipe = self.query_one("#launch-recipe", Input).value.strip()
        if not recipe:
            return None
        try:
            return fit_args(recipe, str(self.app.runs_dir), self.query_one("#launch-extra", Input).value)
        except ValueError as exc:  # unbalanced quotes in the extra flags
            self.query_one("#launch-command", Static).update(f"[red]extra flags: {exc}[/red]")
            return None

    def _show_command(self) -> None:
        args = self._args()
        if args is not None:
            self.query_one("#launch-command", Static).update(command_line(args))
        elif not self.query_one("#launch-recipe", Input).value.strip():
            self.query_one("#launch-command", Static).update("[dim]no recipe saved yet[/dim]")

    def refresh_table(self) -> None:
        table = self.query_one("#launch-table", DataTable)
        rows = []
        for run in self.app.launched:
            run.find_folder()
            folder = relative(run.folder, self.app.runs_dir) if run.folder else "-"
            rows.append((str(run.pid), run.status(), folder, command_line(run.args)))
        if rows != getattr(self, "_rows", None):
            self._rows = rows
            cursor = table.cursor_row
            table.clear()
            for row in rows:
                table.add_row(*row, key=row[0])
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))

    def _selected(self):
        table = self.query_one("#launch-table", DataTable)
        if not self.app.launched or table.row_count == 0:
            return None
        return self.app.launched[min(table.cursor_row, len(self.app.launched) - 1)]

    def action_start(self) -> None:
        args = self._args()
        if args is None:
            self.notify("save a valid recipe in the Recipe builder (F1) first", severity="error")
            return
        self.app.launch_fit(self.query_one("#launch-recipe", Input).value.strip(),
                            self.query_one("#launch-extra", Input).value)

    @on(Button.Pressed, "#launch-start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(DataTable.RowSelected, "#launch-table")
    def _row_selected(self) -> None:
        self.action_monitor()

    def action_monitor(self) -> None:
        run = self._selected()
        if run is not None:
            self.app.monitor(folder=run.folder, launched=run)

    def action_stop(self) -> None:
        run = self._selected()
        if run is not None:
            self.notify(send(run.pid, signal.SIGTERM))

    def action_kill(self) -> None:
        run = self._selected()
        if run is not None:
            self.notify(send(run.pid, signal.SIGKILL))
