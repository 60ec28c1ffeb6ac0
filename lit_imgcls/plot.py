"""``lit-imgcls plot``: training curves of one or several runs, as a PNG and as one self-contained HTML page.

A run folder is what ``fit`` writes: ``runs/<dataset>-<network>/version_N/metrics.csv``. The HTML page carries its
data as JSON and its own small SVG chart code inline, so it opens anywhere with no network at all (a
Content-Security-Policy of ``default-src 'none'`` makes sure of it).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lit_imgcls.errors import UsageError
from lit_imgcls.io import atomic_write, atomic_write_text

# (panel title, metrics drawn in it, log-scale y when the values span this many decades or more)
PANELS: list[tuple[str, tuple[str, ...]]] = [
    ("accuracy", ("train/acc", "val/acc")),
    ("loss", ("train/loss", "val/loss")),
    ("learning rate", ("lr",)),
    ("samples/s", ("train/samples_per_sec",)),
]
METRICS = tuple(m for _, ms in PANELS for m in ms)
# metric -> the column of the epoch's summary row that stands in for it when no window row holds it
EPOCH_SUMMARIES = {"train/acc": "train/epoch_acc", "train/loss": "train/epoch_loss",
                   "train/samples_per_sec": "train/epoch_samples_per_sec"}
X_AXES = ("step", "epoch")


@dataclass
class Series:
    """One metric of one run: x as optimizer step and as (fractional) epoch, and y."""

    step: list[float] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class Run:
    label: str
    path: Path
    series: dict[str, Series]


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders (holding metrics.csv) named by ``paths``: a run folder itself, or any folder above run folders."""
    found: list[Path] = []
    for text in paths:
        p = Path(text)
        if not p.exists():
            raise UsageError(f"run folder not found: {text}")
        if p.is_file():
            raise UsageError(f"{text} is a file; give a run folder (runs/<name>/version_N) or a folder of them")
        if (p / "metrics.csv").is_file():
            found.append(p)
            continue
        below = sorted((m.parent for m in p.rglob("metrics.csv")), key=_natural_key)
        if not below:
            raise UsageError(f"no metrics.csv in {text} or below it: a run folder is runs/<name>/version_N, written by fit")
        found.extend(below)
    return list(dict.fromkeys(found))  # the same run named twice is drawn once


def _natural_key(path: Path) -> list:
    # version_10 after version_9
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_run(folder: Path, label: str | None = None) -> Run:
    """The plotted metrics of one run folder, with x as step and as fractional epoch.

    A window's epoch position is its step within that epoch's steps (the epoch's end is the step of its
    ``train/epoch_time`` row); validation and epoch summaries sit at the end of their epoch.
    """
    path = folder / "metrics.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not rows or "step" not in rows[0]:
        raise UsageError(f"{path} has no metric rows with a step column: not a metrics.csv written by fit")
    last: dict[int, float] = {}  # epoch -> the last step seen in it
    closed: dict[int, float] = {}  # epoch -> the step of its summary row, where it ended exactly
    for row in rows:
        epoch, step = _number(row.get("epoch")), _number(row.get("step"))
        if epoch is None or step is None:
            continue
        last[int(epoch)] = max(last.get(int(epoch), step), step)
        if _number(row.get("train/epoch_time")) is not None:
            closed[int(epoch)] = step
    end_step = {**last, **closed}
    series = {m: Series() for m in METRICS}
    for row in rows:
        epoch, step = _number(row.get("epoch")), _number(row.get("step"))
        if epoch is None or step is None:
            continue
        e = int(epoch)
        start = end_step.get(e - 1, 0.0)
        span = max(end_step.get(e, step) - start, 1.0)
        is_window = _number(row.get("train/samples_per_sec")) is not None or _number(row.get("lr")) is not None
        x_epoch = e + min(max((step - start) / span, 0.0), 1.0) if is_window else e + 1.0
        for m in METRICS:
            y = _number(row.get(m))
            if y is not None:
                s = series[m]
                s.step.append(step)
                s.epoch.append(round(x_epoch, 6))
                s.y.append(y)
    # A run whose epochs are shorter than disp_batches logs no window rows: its train curves are the epochs'
    # summaries (the Speedometer's Train-accuracy line), drawn at each epoch's end.
    for m, summary in EPOCH_SUMMARIES.items():
        if not series[m].y:
            for row in rows:
                epoch, step, y = _number(row.get("epoch")), _number(row.get("step")), _number(row.get(summary))
                if epoch is not None and step is not None and y is not None:
                    series[m].step.append(step)
                    series[m].epoch.append(int(epoch) + 1.0)
                    series[m].y.append(y)
    if not any(s.y for s in series.values()):
        raise UsageError(f"{path} holds none of the plotted metrics ({', '.join(METRICS)})")
    return Run(label or str(folder), folder, series)


def labels(folders: list[Path]) -> list[str]:
    """Each run labelled by its path, without the part every path shares when there are several."""
    texts = [os.path.normpath(str(f)) for f in folders]
    if len(texts) < 2:
        return texts
    common = os.path.commonpath([os.path.abspath(t) for t in texts])
    short = [os.path.relpath(os.path.abspath(t), os.path.dirname(common)) for t in texts]
    return short if len(set(short)) == len(short) else texts


def load_runs(paths: list[str]) -> list[Run]:
    folders = find_runs(paths)
    return [read_run(f, label) for f, label in zip(folders, labels(folders))]


def _log_scale(values: list[float]) -> bool:
    # An LR that decays by 100x or more is unreadable on a linear axis.
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) >= 100


def run_colors(n: int) -> list[str]:
    """``n`` colours (``#rrggbb``), one per run, all different: matplotlib's ``tab10`` up to 10 runs, ``tab20`` up to
    20, beyond that points of the ``turbo`` colour map spread by the golden ratio, so runs listed next to each
    other (a sweep's neighbours) get far-apart hues. The PNG and the HTML page use the same ones."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return [to_hex(cmap(i)) for i in range(n)]
    turbo = colormaps["turbo"]
    return [to_hex(turbo(0.05 + 0.9 * ((i * 0.6180339887) % 1.0))) for i in range(n)]


LEGEND_ROWS = 40  # legend entries per column beside the 8-inch-high grid, at font size 7


def figure(runs: list[Run], x: str = "step"):
    """The PNG's matplotlib figure: a 2 x 2 grid (accuracy, loss, learning rate, samples/s) against ``x``, train
    solid, validation dashed with dots, one colour per run (:func:`run_colors`), and one legend for all four
    panels outside them, on the right (more columns past :data:`LEGEND_ROWS` runs), so curves are never hidden
    under it. 12 x 8 inches; the panels take what the legend leaves."""
    import matplotlib

    matplotlib.use("Agg")  # no display, and no GUI toolkit import
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100, layout="constrained")
    colors = run_colors(len(runs))
    drawn: set[int] = set()
    for ax, (title, metrics) in zip(axes.flat, PANELS):
        values: list[float] = []
        for i, run in enumerate(runs):
            for m in metrics:
                s = run.series[m]
                if not s.y:
                    continue
                val = m.startswith("val/")
                ax.plot(getattr(s, x), s.y, color=colors[i], linestyle="--" if val else "-",
                        marker="o" if val or len(s.y) == 1 else None, markersize=4, linewidth=1.5)
                values += s.y
                drawn.add(i)
        if values and _log_scale(values):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colors[i], linewidth=2, label=runs[i].label) for i in sorted(drawn)]
    handles += [Line2D([], [], color="#555", linestyle="-", label="train"),
                Line2D([], [], color="#555", linestyle="--", marker="o", markersize=4, label="validation")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, ncols=-(-len(handles) // LEGEND_ROWS))
    return fig


def write_png(runs: list[Run], path: Path, x: str = "step") -> None:
    """:func:`figure` as a PNG at ``path`` (1200 x 800 pixels), written atomically."""
    import matplotlib.pyplot as plt

    fig = figure(runs, x)

    def save(f) -> None:
        fig.savefig(f, format="png")

    try:
        atomic_write(path, save)
    finally:
        plt.close(fig)


def chart_data(runs: list[Run], x: str) -> dict:
    return {
        "x": x,
        "panels": [{"title": t, "metrics": list(ms), "log": _log_scale([v for r in runs for m in ms for v in r.series[m].y])}
                   for t, ms in PANELS],
        "runs": [{"label": r.label, "color": color, "series": {m: {"step": s.step, "epoch": s.epoch, "y": s.y}
                                                                 for m, s in r.series.items() if s.y}}
                 for r, color in zip(runs, run_colors(len(runs)))],
    }


def script_json(data: dict) -> str:
    """JSON that cannot end its <script> block early: ``</script>``, ``<!--`` and the like become \\u escapes."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_html(runs: list[Run], path: Path, x: str = "step", title: str = "lit-imgcls runs") -> None:
    import html

    page = (_HTML.replace("%TITLE%", html.escape(title))
            .replace("%STYLE%", _CSS).replace("%DATA%", script_json(chart_data(runs, x))).replace("%SCRIPT%", _JS))
    atomic_write_text(path, page)


def plot(paths: list[str], out: str | None = None, x: str = "step") -> tuple[Path, Path]:
    """Reads the runs and writes ``OUT.png`` and ``OUT.html``; returns both paths."""
    if x not in X_AXES:
        raise UsageError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    if not paths:
        raise UsageError("plot needs at least one run folder")
    runs = load_runs(paths)
    prefix = Path(out) if out else Path(paths[0]) / "plot"
    png, page = Path(f"{prefix}.png"), Path(f"{prefix}.html")
    write_png(runs, png, x)
    names = ", ".join(r.label for r in runs)
    write_html(runs, page, x, title=f"lit-imgcls: {names}" if len(names) < 120 else f"lit-imgcls: {len(runs)} runs")
    return png, page


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>%STYLE%</style>
</head><body>
<header><h1>%TITLE%</h1>
<div id="controls">x axis: <button data-x="step">step</button><button data-x="epoch">epoch</button>
<button id="reset">reset zoom</button>
<span class="hint">drag across a chart or use the wheel to zoom; click a run to hide or show it</span></div>
<div id="legend"></div></header>
<main id="grid"></main>
<div id="tip" hidden></div>
<script type="application/json" id="data">%DATA%</script>
<script>%SCRIPT%</script>
</body></html>
"""

_CSS = """
body{font:13px system-ui,sans-serif;margin:12px;color:#222;background:#fff}
h1{font-size:16px;margin:0 0 6px}
#controls button{margin-right:4px}#controls button.on{font-weight:bold}
.hint{color:#777;margin-left:8px}
#legend{margin:6px 0}
.entry{display:inline-block;margin-right:14px;cursor:pointer;user-select:none}
.entry.off{opacity:.35;text-decoration:line-through}
.swatch{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:5px}
#grid{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.panel{border:1px solid #ddd;border-radius:4px;padding:4px}
.panel h2{font-size:13px;margin:2px 6px}
svg{display:block;width:100%;height:280px;cursor:crosshair}
svg text{font-size:10px;fill:#555}
.grid line{stroke:#eee}.axis{stroke:#999}
.sel{fill:rgba(66,133,244,.15);stroke:rgba(66,133,244,.6)}
#tip{position:fixed;pointer-events:none;background:rgba(30,30,30,.9);color:#fff;padding:4px 7px;border-radius:3px;
white-space:pre;font-size:12px}
"""

# Plain ES2017, no library: scales, ticks, SVG paths, drag/wheel zoom on a shared x-range, a nearest-point
# tooltip, legend toggles. The page records what it drew in data-* attributes, which tests read back.
_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const NS = "http://www.w3.org/2000/svg";
const M = {l: 58, r: 12, t: 8, b: 30};
const S = {x: D.x, hidden: new Set(), zoom: null};
const panels = [];

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
  return String(+v.toPrecision(4));
}
function ticks(lo, hi, n) {
  const span = hi - lo || 1, raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw) || 10 * p;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}
function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    const v = Math.pow(10, e);
    if (v >= lo && v <= hi) out.push(v);
  }
  return out.length >= 2 ? out : [lo, hi];
}
function visibleSeries(p) {
  const out = [];
  D.runs.forEach((run, i) => {
    if (S.hidden.has(i)) return;
    for (const m of p.metrics) if (run.series[m]) out.push({run: i, label: run.label, metric: m, s: run.series[m]});
  });
  return out;
}
function xExtent() {
  let lo = Infinity, hi = -Infinity;
  D.runs.forEach((run, i) => {
    if (S.hidden.has(i)) return;
    for (const m in run.series) for (const v of run.series[m][S.x]) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  });
  if (!isFinite(lo)) return [0, 1];
  return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
}
function draw(p) {
  const svg = p.svg;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = svg.clientWidth || 560, H = svg.clientHeight || 280;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  // Unzoomed, a little room on both sides keeps end markers whole.
  const [x0, x1] = S.zoom || (([a, b]) => [a - (b - a) * 0.015, b + (b - a) * 0.015])(xExtent());
  const series = visibleSeries(p);
  let lo = Infinity, hi = -Infinity;
  for (const {s} of series) s[S.x].forEach((x, j) => {
    if (x >= x0 && x <= x1) { lo = Math.min(lo, s.y[j]); hi = Math.max(hi, s.y[j]); }
  });
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  const log = p.log && lo > 0;
  if (!log) { const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1; lo -= pad; hi += pad; }
  const tx = v => M.l + (v - x0) / (x1 - x0) * (W - M.l - M.r);
  const ty = log ? v => H - M.b - (Math.log(v) - Math.log(lo)) / ((Math.log(hi) - Math.log(lo)) || 1) * (H - M.t - M.b)
                 : v => H - M.b - (v - lo) / (hi - lo) * (H - M.t - M.b);
  p.scale = {x0, x1, W, H, tx, ty, inv: px => x0 + (px - M.l) / (W - M.l - M.r) * (x1 - x0)};
  const clipId = "clip" + p.index;
  el("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b}, el("clipPath", {id: clipId}, el("defs", {}, svg)));
  const g = el("g", {class: "grid"}, svg);
  for (const v of ticks(x0, x1, 6)) {
    el("line", {x1: tx(v), x2: tx(v), y1: M.t, y2: H - M.b}, g);
    el("text", {x: tx(v), y: H - M.b + 14, "text-anchor": "middle"}, svg).textContent = fmt(v);
  }
  for (const v of (log ? logTicks(lo, hi) : ticks(lo, hi, 5))) {
    el("line", {x1: M.l, x2: W - M.r, y1: ty(v), y2: ty(v)}, g);
    el("text", {x: M.l - 5, y: ty(v) + 3, "text-anchor": "end"}, svg).textContent = fmt(v);
  }
  el("text", {x: W - M.r, y: H - 4, "text-anchor": "end"}, svg).textContent = S.x;
  el("path", {class: "axis", d: `M${M.l} ${M.t}V${H - M.b}H${W - M.r}`, fill: "none"}, svg);
  const plot = el("g", {"clip-path": `url(#${clipId})`}, svg);
  let paths = 0;
  for (const {run, metric, s} of series) {
    const color = D.runs[run].color, val = metric.startsWith("val/");
    const d = s[S.x].map((x, j) => `${j ? "L" : "M"}${tx(x).toFixed(1)} ${ty(s.y[j]).toFixed(1)}`).join("");
    el("path", {d, fill: "none", stroke: color, "stroke-width": 1.6, "stroke-dasharray": val ? "5 3" : "none",
                class: "series", "data-run": run, "data-metric": metric}, plot);
    paths++;
    if (val || s.y.length === 1) s[S.x].forEach((x, j) => el("circle", {cx: tx(x), cy: ty(s.y[j]), r: 2.5, fill: color}, plot));
  }
  p.marker = el("circle", {r: 4, fill: "none", stroke: "#000", visibility: "hidden"}, svg);
  p.sel = el("rect", {class: "sel", y: M.t, height: H - M.t - M.b, width: 0, visibility: "hidden"}, svg);
  svg.setAttribute("data-drawn", "1");
  svg.setAttribute("data-paths", String(paths));
  svg.setAttribute("data-x-range", `${fmt(x0)},${fmt(x1)}`);
}
function drawAll() {
  panels.forEach(draw);
  document.querySelectorAll("#controls [data-x]").forEach(b => b.classList.toggle("on", b.dataset.x === S.x));
  document.body.setAttribute("data-drawn-panels", String(panels.filter(p => p.svg.getAttribute("data-drawn")).length));
  document.body.setAttribute("data-paths", panels.map(p => p.svg.getAttribute("data-paths")).join(","));
  document.body.setAttribute("data-zoom", S.zoom ? S.zoom.map(fmt).join(",") : "");
}
function nearest(p, px, py) {
  let best = null;
  for (const {label, metric, s} of visibleSeries(p)) s[S.x].forEach((x, j) => {
    const dx = p.scale.tx(x) - px, dy = p.scale.ty(s.y[j]) - py, d = dx * dx + dy * dy * 0.25;
    if (!best || d < best.d) best = {d, label, metric, x, y: s.y[j]};
  });
  return best;
}
function svgX(p, ev) {
  const r = p.svg.getBoundingClientRect();
  return [(ev.clientX - r.left) * p.scale.W / (r.width || p.scale.W), (ev.clientY - r.top) * p.scale.H / (r.height || p.scale.H)];
}
function hover(p, ev) {
  const tip = document.getElementById("tip");
  const [px, py] = svgX(p, ev);
  if (p.drag) {
    const a = Math.min(p.drag, px), b = Math.max(p.drag, px);
    p.sel.setAttribute("x", a); p.sel.setAttribute("width", b - a); p.sel.setAttribute("visibility", "visible");
  }
  const n = nearest(p, px, py);
  if (!n) { tip.hidden = true; return; }
  tip.textContent = `${n.label}\n${n.metric}\n${S.x} ${fmt(n.x)}\ny ${fmt(n.y)}`;
  tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  tip.hidden = false;
  p.marker.setAttribute("cx", p.scale.tx(n.x)); p.marker.setAttribute("cy", p.scale.ty(n.y));
  p.marker.setAttribute("visibility", "visible");
}
function setZoom(a, b) {
  const [lo, hi] = xExtent();
  a = Math.max(a, lo); b = Math.min(b, hi);
  S.zoom = b - a > (hi - lo) * 1e-4 ? [a, b] : S.zoom;
  if (S.zoom && S.zoom[0] <= lo && S.zoom[1] >= hi) S.zoom = null;
  drawAll();
}
function build() {
  const grid = document.getElementById("grid");
  D.panels.forEach((spec, index) => {
    const div = document.createElement("div");
    div.className = "panel";
    div.innerHTML = "<h2></h2>";
    div.firstChild.textContent = spec.title;
    const svg = el("svg", {"data-panel": spec.title}, div);
    grid.appendChild(div);
    const p = Object.assign({index, svg}, spec);
    panels.push(p);
    svg.addEventListener("mousedown", ev => { p.drag = svgX(p, ev)[0]; ev.preventDefault(); });
    svg.addEventListener("mousemove", ev => hover(p, ev));
    svg.addEventListener("mouseleave", () => { document.getElementById("tip").hidden = true; });
    svg.addEventListener("mouseup", ev => {
      const start = p.drag; p.drag = null;
      if (start == null) return;
      const end = svgX(p, ev)[0];
      if (Math.abs(end - start) > 5) setZoom(p.scale.inv(Math.min(start, end)), p.scale.inv(Math.max(start, end)));
      else p.sel.setAttribute("visibility", "hidden");
    });
    svg.addEventListener("wheel", ev => {
      ev.preventDefault();
      const c = p.scale.inv(svgX(p, ev)[0]), f = ev.deltaY < 0 ? 0.8 : 1.25;
      setZoom(c - (c - p.scale.x0) * f, c + (p.scale.x1 - c) * f);
    }, {passive: false});
    svg.addEventListener("dblclick", () => { S.zoom = null; drawAll(); });
  });
  const legend = document.getElementById("legend");
  D.runs.forEach((run, i) => {
    const e = document.createElement("span");
    e.className = "entry"; e.dataset.run = i;
    e.innerHTML = '<span class="swatch"></span><span class="name"></span>';
    e.firstChild.style.background = run.color;
    e.lastChild.textContent = run.label;
    e.addEventListener("click", () => {
      S.hidden.has(i) ? S.hidden.delete(i) : S.hidden.add(i);
      e.classList.toggle("off", S.hidden.has(i));
      S.zoom = null;
      drawAll();
    });
    legend.appendChild(e);
  });
  const key = document.createElement("span");
  key.className = "hint"; key.textContent = "solid: train, dashed: validation";
  legend.appendChild(key);
  document.querySelectorAll("#controls [data-x]").forEach(b => b.addEventListener("click", () => {
    S.x = b.dataset.x; S.zoom = null; drawAll();
  }));
  document.getElementById("reset").addEventListener("click", () => { S.zoom = null; drawAll(); });
  window.addEventListener("resize", drawAll);
  drawAll();
}
// #selftest: drive the page's own controls (legend, wheel, drag, hover, x switch) and record what happened, so a
// headless browser's DOM dump proves the interactions work.
function selftest() {
  const r = {}, p = panels[0], box = p.svg.getBoundingClientRect();
  const at = (t, fx, fy, extra) => new MouseEvent(t, Object.assign({bubbles: true, clientX: box.left + fx * box.width,
                                                                    clientY: box.top + fy * box.height}, extra));
  const count = () => panels.map(q => +q.svg.getAttribute("data-paths"));
  const all = count();
  document.querySelector(".entry").click();
  r.hidden_paths = count(); document.querySelector(".entry").click(); r.shown_again = count().join() === all.join();
  p.svg.dispatchEvent(new WheelEvent("wheel", {bubbles: true, cancelable: true, deltaY: -100,
                                               clientX: box.left + box.width / 2, clientY: box.top + box.height / 2}));
  r.wheel_zoom = document.body.getAttribute("data-zoom");
  S.zoom = null; drawAll();
  p.svg.dispatchEvent(at("mousedown", 0.3, 0.5)); p.svg.dispatchEvent(at("mousemove", 0.6, 0.5));
  p.svg.dispatchEvent(at("mouseup", 0.6, 0.5));
  r.drag_zoom = document.body.getAttribute("data-zoom");
  p.svg.dispatchEvent(at("mousemove", 0.5, 0.5));
  const tip = document.getElementById("tip");
  r.tooltip = tip.hidden ? "" : tip.textContent;
  document.getElementById("reset").click();
  document.querySelector('[data-x="epoch"]').click(); r.epoch_range = p.svg.getAttribute("data-x-range");
  document.querySelector(`[data-x="${D.x}"]`).click();
  r.all_paths = all;
  document.body.setAttribute("data-selftest", JSON.stringify(r));
}
build();
if (location.hash === "#selftest") selftest();
"""
