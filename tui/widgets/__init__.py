"""The TUI's own widgets."""

from tui.widgets.plot import MetricPlot

__all__ = ["MetricPlot"]
