"""Charts: :class:`LineChart` draws one or more series as lines of braille dots; :class:`MetricPlot` is a metric's
name, latest value and range above its chart.

Textual's Sparkline draws one series as bars, a lone value as a full-width block, and cannot overlay two runs: a
line chart of braille dots (2x4 per cell) shows a single value as one dot and two runs' curves on the same axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Label

MAX_POINTS = 400  # more points than any terminal has dots across: the rest are dropped, the shape kept
COLOURS = ("#4ea8de", "#f4a261", "#90be6d", "#e76f51")  # series 1, 2, ...: A is blue, B orange in Compare
# The braille dot of (column 0..1, row 0..3) inside one character cell (Unicode's braille patterns).
_DOT = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))

Series = tuple[Sequence[float], Sequence[float]]  # (x values, y values), the same length


def thin(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most ``limit`` evenly spaced points of a series, the last one always kept."""
    xs, ys = list(xs), list(ys)
    if len(ys) <= limit:
        return xs, ys
    stride = len(ys) / limit
    keep = [int(i * stride) for i in range(limit - 1)] + [len(ys) - 1]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def raster(series: Sequence[Series], width: int, height: int) -> list[list[tuple[int, int]]]:
    """Cells of a ``width`` x ``height`` chart: (braille bits, 1 + index of the series drawn last there, or 0).

    All series share the axes: x from the smallest to the largest x of any series, y likewise (a flat range is
    drawn across the middle). Consecutive points are joined by a line; one point is one dot.
    """
    cells = [[(0, 0) for _ in range(width)] for _ in range(height)]
    points = [(list(xs), list(ys)) for xs, ys in series if len(ys)]
    if not points or width <= 0 or height <= 0:
        return cells
    all_x = [x for xs, _ in points for x in xs]
    all_y = [y for _, ys in points for y in ys]
    x0, x1, y0, y1 = min(all_x), max(all_x), min(all_y), max(all_y)
    dots_w, dots_h = 2 * width, 4 * height

    def to_dot(x: float, y: float) -> tuple[int, int]:
        col = round((x - x0) / (x1 - x0) * (dots_w - 1)) if x1 > x0 else 0
        row = round((y1 - y) / (y1 - y0) * (dots_h - 1)) if y1 > y0 else dots_h // 2
        return col, row

    for index, (xs, ys) in enumerate(points, start=1):
        dots = [to_dot(x, y) for x, y in zip(xs, ys)]
        path = dots[:1]
        for (ca, ra), (cb, rb) in pairwise(dots):  # every dot between two points, so the line has no gaps
            n = max(abs(cb - ca), abs(rb - ra), 1)
            path += [(round(ca + (cb - ca) * k / n), round(ra + (rb - ra) * k / n)) for k in range(1, n + 1)]
        for col, row in path:
            bits, _ = cells[row // 4][col // 2]
            cells[row // 4][col // 2] = (bits | _DOT[row % 4][col % 2], index)
    return cells


class LineChart(Widget):
    """Series against a shared x axis, as braille lines that fill the widget: ``update(series)`` redraws it."""

    DEFAULT_CSS = "LineChart { height: 3; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.series: list[Series] = []
        self._cells: list[list[tuple[int, int]]] = []
        self._drawn_for: tuple[int, int] = (0, 0)

    def update(self, series: Sequence[Series]) -> None:
        self.series = [thin(xs, ys) for xs, ys in series]
        self._drawn_for = (0, 0)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.size.width, self.size.height
        if self._drawn_for != (width, height):
            self._cells, self._drawn_for = raster(self.series, width, height), (width, height)
        if y >= len(self._cells):
            return Strip.blank(width, self.rich_style)
        base = self.rich_style
        segments = []
        for bits, index in self._cells[y]:
            if bits:
                segments.append(Segment(chr(0x2800 + bits), base + Style(color=COLOURS[(index - 1) % len(COLOURS)])))
            else:
                segments.append(Segment(" ", base))
        return Strip(segments, width)


class MetricPlot(Vertical):
    """One metric against the step (or the epoch): ``update(values)`` redraws it (x is the value's index unless
    ``xs`` are given)."""

    def __init__(self, title: str, spec: str = ".4f", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.spec = spec
        self.values: list[float] = []

    def compose(self) -> ComposeResult:
        yield Label(self._caption(), classes="plot-caption")
        yield LineChart(classes="plot-line")

    def _caption(self) -> str:
        if not self.values:
            return f"[b]{self.title}[/b]  -"
        last, lo, hi = self.values[-1], min(self.values), max(self.values)
        return f"[b]{self.title}[/b] {last:{self.spec}} [dim]({lo:{self.spec}}..{hi:{self.spec}})[/dim]"

    def update(self, values: Sequence[float], xs: Sequence[float] | None = None) -> None:
        values = list(values)
        if values == self.values:
            return
        self.values = values
        self.query_one(".plot-caption", Label).update(self._caption())
        self.query_one(LineChart).update([(list(xs) if xs is not None else list(range(len(values))), values)])


class ComparePlot(Vertical):
    """One metric of two runs (A and B) on one chart, their latest values and colours in the caption."""

    def __init__(self, title: str, spec: str = ".4f", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.spec = spec

    def compose(self) -> ComposeResult:
        yield Label(f"[b]{self.title}[/b]  -", classes="plot-caption")
        yield LineChart(classes="plot-line")

    def update(self, series: Sequence[Series], names: Sequence[str] = ("A", "B")) -> None:
        """``series``: (x, y) of each run, in the order of ``names`` (x: the optimizer step)."""
        parts = [f"[b]{self.title}[/b]"]
        for i, (name, (_, ys)) in enumerate(zip(names, series)):
            value = format(ys[-1], self.spec) if len(ys) else "-"
            parts.append(f"[{COLOURS[i % len(COLOURS)]}]━ {name} {value}[/]")
        self.query_one(".plot-caption", Label).update("  ".join(parts))
        self.query_one(LineChart).update(series)
