"""``score --report PATH.html``: the evaluation of a checkpoint as one self-contained offline HTML page, and the same
numbers as JSON beside it (``PATH.json``: :func:`lit_imgcls.score.report_data`).

The numbers are :mod:`lit_imgcls.evaluation`'s; this module only draws them. The page is static HTML with inline
SVG charts drawn here in Python (the confusion heat map, the reliability diagram), the most confident mistakes as
small PNG thumbnails in ``data:`` URIs (Pillow), and a few lines of script that sort the per-class table. Like
``plot``'s page it loads nothing: a Content-Security-Policy of ``default-src 'none'`` (images from ``data:`` only)
makes sure of it. Every string from the data (class names, paths) is HTML-escaped.

Both files are written atomically and recorded as ours (:mod:`lit_imgcls.owned_files`, record
:data:`RECORD`), so a later ``--report`` replaces a report lit-imgcls wrote and nobody changed, and nothing else.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from lit_imgcls.errors import UsageError

RECORD = ".lit-imgcls-reports"  # the folder's record of the report files score wrote (lit_imgcls.owned_files)
ELSEWHERE = "give another --report"
MATRIX_CLASSES = 40  # up to this many classes the matrix is an SVG grid of cells; beyond, one pixel-cell image
CELL_NUMBERS = 20  # up to this many classes each cell of the grid shows its count
THUMB_SIDE = 96  # a thumbnail's longer side at most, in pixels (tiny images are enlarged towards it)


def report_paths(report: str) -> tuple[Path, Path]:
    """The page and the JSON beside it (same stem) for ``--report``, checked before any scoring: a local path
    ending in ``.html`` whose two files, if they exist, are ones lit-imgcls wrote there and nobody changed.

    Raises:
        UsageError: another ending, a URL, a folder, or a file of either name that is not ours (one line).
    """
    from lit_imgcls.owned_files import check_owned
    from lit_imgcls.storage import local_output

    page = local_output(report, "--report", "write the report here, then copy it")
    if page.suffix.lower() != ".html":
        raise UsageError(f"--report must name an .html file (the JSON is written beside it), got {report}")
    if page.is_dir():
        raise UsageError(f"--report {page} is a folder; give the page to write, like {page / 'report.html'}")
    data = page.with_suffix(".json")
    if page.parent.exists():
        check_owned(page.parent, [page.name, data.name], RECORD, ELSEWHERE)
    return page, data


class MistakeThumbnails:
    """A ``score`` ``observe`` hook keeping thumbnails of the ``keep`` most confident mistakes seen so far.

    A bounded min-heap on (confidence, -index): memory stays at ``keep`` small PNGs whatever the data set's size,
    and the survivors are exactly :func:`lit_imgcls.evaluation.summarize`'s ``confident_mistakes`` (most
    confident first, the earlier image first on a tie), found by the same float32 probabilities.
    """

    def __init__(self, keep: int | None = None) -> None:
        from lit_imgcls.evaluation import MISTAKES

        self.keep = MISTAKES if keep is None else keep
        self.seen = 0  # images observed so far: the next batch's first index in loader order
        self.heap: list[tuple[float, int, bytes]] = []  # (confidence, -index, PNG)
        self.unavailable: str | None = None  # why there are no thumbnails (images that are not pixels)

    def __call__(self, images, labels, probs, datamodule) -> None:
        import torch

        from lit_imgcls.export import as_uint8_images

        p = probs.detach().float().cpu().numpy()  # what ScoreResult.probs keeps, so the same maxima and ties
        y = labels.detach().cpu().numpy()
        start, self.seen = self.seen, self.seen + len(y)
        if self.unavailable is not None or not self.keep:
            return
        confidence, predicted = p.max(axis=1), p.argmax(axis=1)
        chosen = [i for i in np.flatnonzero(predicted != y)
                  if len(self.heap) < self.keep or (float(confidence[i]), -(start + i)) > self.heap[0][:2]]
        # At most ``keep`` of one batch can stay: only those are made into thumbnails.
        chosen = sorted(chosen, key=lambda i: (float(confidence[i]), -i), reverse=True)[:self.keep]
        if not chosen:
            return
        try:
            pixels = as_uint8_images(images[torch.as_tensor(np.array(chosen))], datamodule)
        except UsageError as exc:  # float images that are no pixels: the page says so instead
            self.unavailable = str(exc)
            return
        for i, image in zip(chosen, pixels):
            key = (float(confidence[i]), -(start + int(i)))
            if len(self.heap) < self.keep:
                heapq.heappush(self.heap, (*key, thumbnail_png(image)))
            elif key > self.heap[0][:2]:
                heapq.heapreplace(self.heap, (*key, thumbnail_png(image)))

    def pngs(self) -> dict[int, bytes]:
        """Image index (in loader order) -> its thumbnail PNG."""
        return {-neg: png for _, neg, png in self.heap}


def thumbnail_png(image: np.ndarray) -> bytes:
    """A PNG of one uint8 (H, W, C) image (C = 1 grey, 3 RGB, 4 RGBA; other counts show their first channel): a
    tiny image enlarged by a whole factor with nearest-neighbour (a 28 x 28 digit stays sharp at 84 x 84), a large
    one shrunk to :data:`THUMB_SIDE` pixels on its longer side."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    c = image.shape[2]
    pic = Image.fromarray(image if c in (3, 4) else image[:, :, 0], "RGB" if c == 3 else "RGBA" if c == 4 else "L")
    side = max(pic.size)
    if side * 2 <= THUMB_SIDE:
        factor = THUMB_SIDE // side
        pic = pic.resize((pic.width * factor, pic.height * factor), Image.Resampling.NEAREST)
    elif side > THUMB_SIDE:
        pic.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    return _png(pic)


def _png(pic) -> bytes:
    """A PIL image as PNG bytes."""
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(value: Any) -> str:
    """User data (class names, paths) as HTML text or attribute value: nothing in it is markup."""
    return html.escape(str(value), quote=True)


def _pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def _num(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _blues(shares: np.ndarray) -> np.ndarray:
    """matplotlib's ``Blues`` colour map (the confusion PNG's) as uint8 RGB for shares in [0, 1]."""
    from matplotlib import colormaps

    return (colormaps["Blues"](np.clip(shares, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _row_shares(confusion: np.ndarray) -> np.ndarray:
    counts = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, counts, out=np.zeros(confusion.shape), where=counts > 0)


def confusion_svg(names: list[str], confusion: np.ndarray) -> str:
    """The confusion matrix as an SVG grid (rows: true class, columns: predicted; colour: share of the true
    class; count in each cell up to :data:`CELL_NUMBERS` classes; a tooltip on every cell)."""
    n = len(names)
    cell = max(14, min(36, 560 // max(n, 1)))
    label_w = int(min(max(len(s) for s in names), 24) * 6.8) + 14
    left, top = label_w + 18, label_w + 18
    w, h = left + n * cell + 6, top + n * cell + 24
    shares = _row_shares(confusion)
    colors = _blues(shares)
    out = [f'<svg id="confusion" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="confusion matrix" data-classes="{n}">']
    short = [s if len(s) <= 24 else s[:23] + "…" for s in names]
    for i in range(n):
        y = top + i * cell + cell / 2 + 4
        out.append(f'<text class="lbl" x="{left - 6}" y="{y:.1f}" text-anchor="end"><title>{_e(names[i])}</title>'
                   f'{_e(short[i])}</text>')
        x = left + i * cell + cell / 2 + 4
        out.append(f'<text class="lbl" transform="translate({x:.1f},{top - 6}) rotate(-60)"><title>{_e(names[i])}'
                   f'</title>{_e(short[i])}</text>')
    for i in range(n):
        for j in range(n):
            v = int(confusion[i, j])
            x, y = left + j * cell, top + i * cell
            tip = f"true {names[i]} → predicted {names[j]}: {v} ({100 * shares[i, j]:.1f}% of {names[i]})"
            out.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_hex(colors[i, j])}" '
                       f'data-true="{i}" data-pred="{j}" data-count="{v}"><title>{_e(tip)}</title></rect>')
            if v and n <= CELL_NUMBERS:
                dark = " hi" if shares[i, j] > 0.5 else ""  # white on the dark cells
                out.append(f'<text class="num{dark}" x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                           f'text-anchor="middle">{v}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{n * cell}" height="{n * cell}" fill="none" stroke="#999"/>')
    out.append(f'<text class="axis" x="{left + n * cell / 2:.1f}" y="{h - 6}" text-anchor="middle">'
               f'predicted class (columns) · true class (rows)</text>')
    out.append("</svg>")
    return "".join(out)


def confusion_png(confusion: np.ndarray) -> bytes:
    """The matrix of many classes as an image, one square of pixels per cell (nearest-neighbour, at most about
    900 pixels a side), in the same colours as :func:`confusion_svg`."""
    from PIL import Image

    n = confusion.shape[0]
    factor = max(1, 900 // n)
    pic = Image.fromarray(_blues(_row_shares(confusion)), "RGB")
    if factor > 1:
        pic = pic.resize((n * factor, n * factor), Image.Resampling.NEAREST)
    return _png(pic)


def reliability_svg(table: list[dict[str, Any]]) -> str:
    """The reliability diagram (Guo et al. 2017, figure 1): one bar per confidence bin whose height is the accuracy
    of the images in it, the bin's mean confidence marked, the diagonal of perfect calibration, and each bin's
    image count above its bar."""
    w, h, left, right, top, bottom = 520, 360, 48, 12, 26, 40
    pw, ph = w - left - right, h - top - bottom

    def x(v: float) -> float:
        return left + v * pw

    def y(v: float) -> float:
        return top + (1 - v) * ph

    out = [f'<svg id="reliability" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="reliability diagram">']
    for t in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        out.append(f'<line class="grid" x1="{x(0)}" x2="{x(1)}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
        out.append(f'<text class="tick" x="{x(t):.1f}" y="{h - bottom + 16}" text-anchor="middle">{t:.1f}</text>')
    for b, row in enumerate(table):
        if not row["count"]:
            continue
        x0, x1 = x(row["lower"]) + 1, x(row["upper"]) - 1
        acc, conf = row["accuracy"], row["confidence"]
        tip = (f"confidence {row['lower']:.3f}–{row['upper']:.3f}: {row['count']} images, accuracy {acc:.3f}, "
               f"mean confidence {conf:.3f}")
        out.append(f'<rect class="bar" x="{x0:.1f}" width="{x1 - x0:.1f}" y="{y(acc):.1f}" '
                   f'height="{y(0) - y(acc):.1f}" '
                   f'data-bin="{b}" data-count="{row["count"]}" data-accuracy="{acc:.6f}"><title>{tip}</title></rect>')
        out.append(f'<rect class="gap" x="{x0:.1f}" width="{x1 - x0:.1f}" y="{y(max(acc, conf)):.1f}" '
                   f'height="{abs(y(acc) - y(conf)):.1f}"><title>{tip}</title></rect>')
        out.append(f'<line class="conf" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y(conf):.1f}" y2="{y(conf):.1f}"/>')
        out.append(f'<text class="count" x="{(x0 + x1) / 2:.1f}" y="{y(max(acc, conf)) - 4:.1f}" '
                   f'text-anchor="middle">{row["count"]}</text>')
    out.append(f'<line class="diag" x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}"/>')
    out.append(f'<path class="frame" d="M{x(0)} {y(1)}V{y(0)}H{x(1)}" fill="none"/>')
    out.append(f'<text class="axis" x="{x(0.5)}" y="{h - 6}" text-anchor="middle">'
               'confidence (top-1 probability)</text>')
    out.append(f'<text class="axis" transform="translate(12,{y(0.5)}) rotate(-90)" text-anchor="middle">'
               'accuracy</text>')
    out.append("</svg>")
    return "".join(out)


def render(data: dict[str, Any], thumbnails: dict[int, bytes] | None = None,
           thumbnails_missing: str | None = None) -> str:
    """The page for a :func:`lit_imgcls.score.report_data` document, with ``thumbnails`` (image index -> PNG) of
    its confident mistakes."""
    thumbnails = thumbnails or {}
    names = [c["name"] for c in data["classes"]]
    confusion = np.asarray(data["confusion"], dtype=np.int64).reshape(len(names), len(names))
    cal = data["calibration"]
    k = data["top_k"]
    title = f"lit-imgcls score: {Path(str(data['checkpoint'])).name} on {data['dataset']}"
    facts = [("checkpoint", _e(data["checkpoint"]), "checkpoint"), ("dataset", _e(data["dataset"]), "dataset"),
             ("images", f"{data['count']:,}", "count"), ("top-1", _pct(data["top1"]), "top1")]
    if k:
        facts.append((f"top-{k}", _pct(data["topk"]), "topk"))
    facts += [("balanced accuracy", _pct(data["balanced_accuracy"]), "balanced_accuracy"),
              ("macro F1", _num(data["macro_f1"]), "macro_f1"),
              (f"ECE ({cal['bins']} bins)", _num(cal["ece"]), "ece")]
    notes = [n for n, on in (("EMA weights", data.get("ema")), ("test-time flip averaging", data.get("tta_flip")))
             if on]
    if data.get("images_per_sec") is not None:
        notes.append(f"{data['images_per_sec']:.0f} images/s")
    head = "".join(f'<div class="fact" data-key="{key}"><span>{label}</span><b>{value}</b></div>'
                   for label, value, key in facts)

    rows = []
    for i, c in enumerate(data["classes"]):
        cells = [f'<td class="n">{i}</td>', f'<td class="name">{_e(c["name"])}</td>',
                 f'<td class="n">{c["support"]}</td>']
        for key in ("precision", "recall", "f1"):
            v = c[key]
            sort = "" if v is None else f' data-v="{v:.6f}"'
            cells.append(f'<td class="n"{sort}>{_num(v)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = ('<table id="classes" class="sortable"><thead><tr><th data-type="n">#</th><th>class</th>'
             '<th data-type="n">support</th><th data-type="n">precision</th><th data-type="n">recall</th>'
             '<th data-type="n">F1</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")

    if len(names) <= MATRIX_CLASSES:
        matrix = confusion_svg(names, confusion)
    else:
        side = confusion.shape[0] * max(1, 900 // confusion.shape[0])
        matrix = (f'<p class="hint">{len(names)} classes: each pixel square is one cell (rows: true class in the '
                  f'table\'s order, columns: predicted); the worst confusions are listed beside it.</p>'
                  f'<img id="confusion" class="matrix" width="{side}" height="{side}" alt="confusion matrix" '
                  f'src="{_uri(confusion_png(confusion))}">')
    worst = "".join(f'<tr><td class="name">{_e(w["true"])}</td><td class="name">{_e(w["predicted"])}</td>'
                    f'<td class="n">{w["count"]}</td><td class="n">{_pct(w["share"], 1)}</td></tr>'
                    for w in data["worst_confusions"])
    worst = ('<table id="worst"><thead><tr><th>true class</th><th>predicted as</th><th>images</th>'
             '<th>share of its class</th></tr></thead><tbody>' + worst + "</tbody></table>"
             if worst else '<p id="worst">no confusions: every image was classified right.</p>')

    cards = []
    for m in data["confident_mistakes"]:
        png = thumbnails.get(m["index"])
        pic = (f'<img alt="image {m["index"]}" src="{_uri(png)}">' if png is not None
               else '<div class="nopic">no image</div>')
        cards.append(f'<figure class="mistake" data-index="{m["index"]}">{pic}<figcaption>'
                     f'<span class="t">true <b>{_e(m["true"])}</b></span><span class="p">predicted '
                     f'<b>{_e(m["predicted"])}</b></span><span>{_pct(m["confidence"])}</span><span class="i">image '
                     f'#{m["index"]}</span></figcaption></figure>')
    mistakes = ('<div id="mistakes">' + "".join(cards) + "</div>" if cards
                else '<p id="mistakes">no mistakes.</p>')
    if thumbnails_missing and cards:
        mistakes = f'<p class="hint">no thumbnails: {_e(thumbnails_missing)}</p>' + mistakes

    topk = (f'<table id="topk"><tr><th>top-1</th><td class="n">{_pct(data["top1"])}</td></tr>'
            + (f'<tr><th>top-{k}</th><td class="n">{_pct(data["topk"])}</td></tr>' if k else "") + "</table>")
    bins = "".join(f'<tr><td class="n">{b["lower"]:.3f}–{b["upper"]:.3f}</td><td class="n">{b["count"]}</td>'
                   f'<td class="n">{_num(b["confidence"])}</td><td class="n">{_num(b["accuracy"])}</td></tr>'
                   for b in cal["reliability"])
    page = _HTML.format(
        title=_e(title), style=_CSS, script=_JS, facts=head, notes=_e(", ".join(notes)), table=table, matrix=matrix,
        worst=worst, mistakes=mistakes, topk=topk, reliability=reliability_svg(cal["reliability"]), bins=bins,
        ece=_num(cal["ece"]), nbins=cal["bins"])
    return page


def write_report(data: dict[str, Any], page: Path, json_path: Path,
                 thumbnails: MistakeThumbnails | None = None) -> list[Path]:
    """Writes the page and the JSON (``data`` itself, strict JSON: no NaN or infinity), each atomically, recorded
    as ours in the folder's :data:`RECORD`.

    Raises:
        UsageError: (before writing anything) a file of either name that is not one lit-imgcls wrote there.
        ValueError: ``data`` holding NaN or infinity.
    """
    from lit_imgcls.owned_files import write_owned

    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    pngs = thumbnails.pngs() if thumbnails is not None else {}
    missing = thumbnails.unavailable if thumbnails is not None else "no images were kept"
    doc = render(data, pngs, missing)
    page.parent.mkdir(parents=True, exist_ok=True)
    return write_owned(page.parent, {page.name: doc, json_path.name: text}, RECORD, prune=False, elsewhere=ELSEWHERE)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head><body>
<header><h1>{title}</h1><div id="facts">{facts}</div><p class="hint">{notes}</p></header>
<main>
<section class="two"><div><h2>Per class</h2>
<p class="hint">precision: right among the images predicted as the class; recall: right among the class's images;
— : undefined (never predicted, or no images). Click a heading to sort.</p><div id="per-class">{table}</div>
<h2>Worst confusions</h2>{worst}</div>
<div><h2>Confusion matrix</h2><p class="hint">rows: true class, columns: predicted class; colour: share of the
true class's images.</p>{matrix}</div></section>
<section><h2>Most confident mistakes</h2>{mistakes}</section>
<section class="two"><div><h2>Reliability diagram</h2><p class="hint">bars: accuracy of the images in each
confidence bin (count above); red: the gap to the bin's mean confidence; dashed: perfect calibration. Expected
calibration error {ece} ({nbins} equal-width bins, Guo et al. 2017).</p>{reliability}
<details><summary>bins</summary><table id="bins"><thead><tr><th>confidence</th><th>images</th>
<th>mean confidence</th><th>accuracy</th></tr></thead><tbody>{bins}</tbody></table></details></div>
<div><h2>Top-k accuracy</h2>{topk}</div></section>
</main>
<script>{script}</script>
</body></html>
"""

_CSS = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222;background:#fff;max-width:1400px}
h1{font-size:17px;margin:0 0 8px;overflow-wrap:anywhere}h2{font-size:15px;margin:18px 0 6px}
#facts{display:flex;flex-wrap:wrap;gap:8px}
.fact{border:1px solid #ddd;border-radius:4px;padding:4px 10px;max-width:100%;overflow-wrap:anywhere}
.fact span{display:block;color:#666;font-size:11px}.fact b{font-size:15px}
.hint{color:#666;margin:4px 0}
table{border-collapse:collapse}th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.name{max-width:28em;overflow-wrap:anywhere}
table.sortable th{cursor:pointer;user-select:none}table.sortable th.on::after{content:" ▾"}
table.sortable th.on.up::after{content:" ▴"}
#per-class{max-height:520px;overflow:auto}
.chart text{font-size:11px;fill:#444}.chart .num{font-size:10px;fill:#222}.chart .num.hi{fill:#fff}.chart .axis{fill:#666}
.chart .grid{stroke:#eee}.chart .frame{stroke:#999}.chart .bar{fill:#4a7fb5}
.chart .gap{fill:rgba(214,39,40,.28);stroke:rgba(214,39,40,.7)}.chart .conf{stroke:#d62728;stroke-width:1.5}
.chart .diag{stroke:#555;stroke-dasharray:5 4}.chart .count{font-size:10px;fill:#333}
img.matrix{image-rendering:pixelated;max-width:100%;height:auto;border:1px solid #999}
#mistakes{display:flex;flex-wrap:wrap;gap:10px}
figure.mistake{margin:0;border:1px solid #ddd;border-radius:4px;padding:6px;width:120px;text-align:center}
figure.mistake img{image-rendering:pixelated;max-width:108px;max-height:108px;display:block;margin:0 auto 4px}
figure.mistake span{display:block;font-size:11px;overflow-wrap:anywhere}figure.mistake .i{color:#777}.nopic{color:#999;padding:30px 0}
.two{display:flex;flex-wrap:wrap;gap:14px 28px;align-items:flex-start}.two>div>p.hint{max-width:440px}
"""

# Sorting the per-class table is the page's only script: the charts are SVG drawn before the page was written.
_JS = r"""
"use strict";
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
    const up = th.classList.contains("on") && !th.classList.contains("up");
    table.querySelectorAll("th").forEach(h => h.classList.remove("on", "up"));
    th.classList.add("on");
    th.classList.toggle("up", up);
    const num = th.dataset.type === "n", body = table.tBodies[0];
    const key = tr => { const td = tr.cells[col]; return num ? parseFloat(td.dataset.v ?? td.textContent) : td.textContent; };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (num) { if (isNaN(x)) return isNaN(y) ? 0 : 1; if (isNaN(y)) return -1; return up ? x - y : y - x; }
      return up ? y.localeCompare(x) : x.localeCompare(y);
    });
    rows.forEach(r => body.appendChild(r));
  }));
});
// What the page showed, for a headless browser's DOM dump: the script ran, and how many images decoded; with
// #selftest, the class column's order after a click on the F1 heading (twice: descending, then ascending).
document.body.setAttribute("data-ready", "1");
if (location.hash === "#selftest") {
  const table = document.getElementById("classes"), f1 = table.querySelectorAll("th")[5], order = [];
  const names = () => Array.from(table.tBodies[0].rows).map(r => r.cells[0].textContent);
  f1.click(); order.push(names()); f1.click(); order.push(names());
  document.body.setAttribute("data-sorted", JSON.stringify(order));
}
window.addEventListener("load", () => document.body.setAttribute("data-images-shown",
  String(Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length)));
"""
