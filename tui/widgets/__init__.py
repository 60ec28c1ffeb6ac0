"""The TUI's own widgets."""

from tui.widgets.plot import ComparePlot, LineChart, MetricPlot

__all__ = ["ComparePlot", "LineChart", "MetricPlot"]
