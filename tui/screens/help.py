"""The keys of every screen (``?`` or F10)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]lit-imgcls tui[/b]: build recipes, launch runs, watch them, compare them.

[b]Everywhere[/b]
  F1  Recipe builder      F2  Launch      F3  Monitor      F4  Runs      F5  Pack
  ?   this help (F10 while typing)        Ctrl+Q  quit (runs started here keep running)
  Tab / Shift+Tab  next / previous field;  the mouse works too

[b]Recipe builder[/b]
  every field is checked as you type, with the CLI's own checks; errors show beside the field
  network field:  Up / Down  move through the matches    Enter  take the highlighted one
  Ctrl+S  save the recipe (to "save as": recipes/recipe.yaml unless you change it)
  Ctrl+L  save and launch it (refused while any field is wrong)

[b]Launch[/b]
  Ctrl+R  start the saved recipe (extra flags are appended, e.g. --threads 1)
  on the table:  Enter  monitor    s  stop gracefully    k  kill

[b]Monitor[/b]
  s  stop gracefully (SIGTERM: the step ends, a -stop.ckpt checkpoint is saved, the run exits)
  k  kill (SIGKILL, nothing saved)    o  show the run folder    a  attach to another folder

[b]Runs[/b]
  Enter  monitor the run    Space  mark two    c  compare the marked runs    r  refresh
  e  the run's report (score --report): figures, per-class table, confusion matrix; in it:
     m  make one    n  an older one    click a column header  sort    Esc  back

[b]Pack[/b]
  Ctrl+R  run `lit-imgcls dataset pack` with the fields, its output shown live
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,f10,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(HELP, id="help-text")
