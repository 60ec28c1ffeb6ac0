"""MetricPlot: a metric's name, latest value, range and a sparkline of its history."""

from __future__ import annotations

from typing import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

MAX_POINTS = 400  # a sparkline shows at most one bar per cell: older points are merged into buckets anyway


class MetricPlot(Vertical):
    """One metric against the step (or the epoch): ``update(values)`` redraws it."""

    def __init__(self, title: str, spec: str = ".4f", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.spec = spec
        self.values: list[float] = []

    def compose(self) -> ComposeResult:
        yield Label(self._caption(), classes="plot-caption")
        yield Sparkline([], summary_function=max, classes="plot-line")

    def _caption(self) -> str:
        if not self.values:
            return f"[b]{self.title}[/b]  -"
        last, lo, hi = self.values[-1], min(self.values), max(self.values)
        return f"[b]{self.title}[/b] {last:{self.spec}} [dim]({lo:{self.spec}}..{hi:{self.spec}})[/dim]"

    def update(self, values: Sequence[float]) -> None:
        values = list(values)
        if values == self.values:
            return
        self.values = values
        if len(values) > MAX_POINTS:  # keep the shape, drop the detail no terminal can show
            stride = len(values) / MAX_POINTS
            values = [values[int(i * stride)] for i in range(MAX_POINTS - 1)] + [values[-1]]
        self.query_one(".plot-caption", Label).update(self._caption())
        self.query_one(Sparkline).data = values
