from __future__ import annotations

from typing import Literal, Sequence


def plot(run_dirs: Sequence[str], out: str | None = None, x: Literal["step", "epoch"] = "step") -> None:
    """Draw training curves of one or several runs: a PNG and one self-contained interactive HTML page.

    Each RUN_DIR is a run folder written by fit (runs/<dataset>-<network>/version_N, holding metrics.csv) or a
    folder above run folders (every version in it is drawn). Four panels: train/validation accuracy, loss,
    learning rate and samples/s. The HTML page needs no network (data and chart code are inline): drag across a
    chart or use the wheel to zoom, hover for values, click a run in the legend to hide or show it.

    Args:
        run_dirs: run folders, or folders holding run folders (one or more).
        out: where to write: OUT.png and OUT.html (default: RUN_DIR/plot, of the first RUN_DIR).
        x: x axis of the PNG and the HTML page's first view: optimizer step (iteration) or epoch.
    """
    from lit_imgcls.plot import plot as draw

    png, page = draw(list(run_dirs), out, x)
    print(f"wrote {png}")
    print(f"wrote {page}")
