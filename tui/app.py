"""LitImgclsApp: the Textual application; one mode per screen (builder, launch, monitor, runs, pack)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from tui.launcher import Launched, fit_args, start
from tui.screens.recipe_builder import BuilderScreen
from tui.screens.help import HelpScreen
from tui.screens.launch import LaunchScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.pack import PackScreen
from tui.screens.runs import RunsScreen


def default_recipes_dir() -> Path:
    here = Path("recipes")
    if here.is_dir():
        return here
    from lit_imgcls.shipped import folder

    return folder("recipes")


class LitImgclsApp(App):
    """Build recipes, launch runs, watch them live, compare them, pack datasets."""

    TITLE = "lit-imgcls"
    CSS_PATH = "app.tcss"
    MODES = {
        "builder": BuilderScreen,
        "launch": LaunchScreen,
        "monitor": MonitorScreen,
        "runs": RunsScreen,
        "pack": PackScreen,
    }
    BINDINGS = [
        Binding("f1", "switch_mode('builder')", "Recipe"),
        Binding("f2", "switch_mode('launch')", "Launch"),
        Binding("f3", "switch_mode('monitor')", "Monitor"),
        Binding("f4", "switch_mode('runs')", "Runs"),
        Binding("f5", "switch_mode('pack')", "Pack"),
        Binding("question_mark,f10", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, runs_dir: str = "runs", attach: str | None = None, recipes_dir: str | None = None) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.recipes_dir = Path(recipes_dir) if recipes_dir else default_recipes_dir()
        self.launched: list[Launched] = []
        self.recipe_path: str | None = None  # the last recipe saved valid by the builder
        self.extra_args = ""  # flags added after the recipe by Launch
        self.monitor_target: tuple[Path | None, Launched | None] | None = (Path(attach), None) if attach else None
        self._attach = attach

    def on_mount(self) -> None:
        self.switch_mode("monitor" if self._attach else "builder")

    # -- shared actions ------------------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def launch_fit(self, recipe_path: str, extra: str | None = None) -> Launched:
        """Starts ``lit-imgcls fit --recipe RECIPE --run-dir RUNS_DIR EXTRA`` and opens its Monitor."""
        args = fit_args(recipe_path, str(self.runs_dir), self.extra_args if extra is None else extra)
        run = start(args, self.runs_dir, self.runs_dir / ".tui" / "logs")
        self.launched.append(run)
        self.notify(f"started process {run.pid}", title="launch")
        self.monitor(launched=run)
        return run

    def monitor(self, folder: Path | None = None, launched: Launched | None = None) -> None:
        """Shows the Monitor on a run folder, or on a process started here (its folder appears with its start)."""
        self.monitor_target = (folder, launched)
        if self.current_mode == "monitor":
            screen = self.screen
            if isinstance(screen, MonitorScreen):
                screen.attach_target()
        else:
            self.switch_mode("monitor")

    def on_unmount(self) -> None:
        for run in self.launched:  # reap finished children; live runs go on without the TUI
            run.poll()
