"""A run's evaluation reports (the JSON ``lit-imgcls score --report`` writes), in plain Python (no Textual): where
they are, which are readable, and the ``score`` command that makes one.

A report sits beside the checkpoint it scored (the TUI asks for ``<checkpoint stem>-report.html``, and ``score``
writes the JSON beside the page); a run's checkpoints are the ones its ``events.jsonl`` names. A report file is data:
it is parsed with :func:`json.loads` only, its shape checked before anything shows it, and a damaged or foreign file
is skipped with a note.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.runs import load_run

# A report of 1000 classes (a 1000 x 1000 matrix of counts) is a few MB; anything far larger is not one.
MAX_REPORT_BYTES = 64 * 1024 * 1024


def report_format() -> str:
    """The ``format`` field of a report (lit_imgcls.score.REPORT_FORMAT: one home for the name)."""
    from lit_imgcls.score import REPORT_FORMAT

    return REPORT_FORMAT


@dataclass
class Report:
    """One readable report file: its path, modification time (s since the epoch) and the checked document."""

    path: Path
    mtime: float
    data: dict[str, Any]


def run_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The local checkpoints a run's events name (each epoch's, then a stop's), oldest first, each once; a relative
    path is taken from the working folder, as ``fit`` wrote it. Checkpoints at a URL are left out."""
    state = load_run(folder)
    named = [e.get("checkpoint") for e in state.epochs] + [(state.end or {}).get("checkpoint")]
    out: list[Path] = []
    for path in named:
        if isinstance(path, str) and path and "://" not in path and Path(path) not in out:
            out.append(Path(path))
    return out


def newest_checkpoint(checkpoints: list[Path]) -> Path | None:
    """The newest of a run's checkpoints (the last named) that is still on disk."""
    return next((p for p in reversed(checkpoints) if p.is_file()), None)


def report_html(checkpoint: Path) -> Path:
    """Where the TUI asks ``score`` to write a checkpoint's report: ``<its folder>/<its stem>-report.html``."""
    return checkpoint.with_name(f"{checkpoint.stem}-report.html")


def score_args(checkpoint: Path) -> list[str]:
    """The arguments after ``lit-imgcls`` that score ``checkpoint`` into its report (argv, never a shell line)."""
    return ["score", "--checkpoint", str(checkpoint), "--report", str(report_html(checkpoint))]


def _number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_report(data: Any) -> str | None:
    """What is wrong with a parsed report document, in words, or None when the TUI can show it: the format, the
    header figures (numbers or null), the per-class rows, a C x C matrix of counts and the worst confusions."""
    if not isinstance(data, dict) or data.get("format") != report_format():
        return f"not a lit-imgcls score report (its \"format\" is not {report_format()!r})"
    for key in ("top1", "topk", "balanced_accuracy", "macro_f1"):
        if not _number(data.get(key)):
            return f"{key} is not a number"
    if not isinstance(data.get("count"), int) or not isinstance(data.get("top_k"), int):
        return "count or top_k is not a whole number"
    if not isinstance(data.get("checkpoint"), str):
        return "checkpoint is not a path"
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes:
        return "classes is not a list of classes"
    for row in classes:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("support"), int):
            return "a class has no name or support"
        if not all(_number(row.get(k)) for k in ("precision", "recall", "f1")):
            return f"class {row['name']!r} has a precision, recall or F1 that is not a number"
    c = len(classes)
    matrix = data.get("confusion")
    if not (isinstance(matrix, list) and len(matrix) == c and all(
            isinstance(r, list) and len(r) == c and all(isinstance(v, int) and v >= 0 for v in r) for r in matrix)):
        return f"confusion is not a {c} x {c} matrix of counts"
    worst = data.get("worst_confusions", [])
    if not isinstance(worst, list) or not all(
            isinstance(w, dict) and isinstance(w.get("count"), int) and _number(w.get("share")) for w in worst):
        return "worst_confusions is not a list of confusions"
    calibration = data.get("calibration", {})
    if not isinstance(calibration, dict) or not _number(calibration.get("ece")):
        return "calibration.ece is not a number"
    if not _number(data.get("temperature")):
        return "temperature is not a number"
    return None


def read_report(path: Path) -> tuple[Report | None, str | None]:
    """(the report, None), or (None, why it is skipped) for a file too large, unreadable, not JSON or not a report."""
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            return None, f"{path.name}: {size} bytes, larger than a report can be ({MAX_REPORT_BYTES})"
        with open(path, "rb") as f:
            raw = f.read(MAX_REPORT_BYTES + 1)
        data = json.loads(raw.decode("utf-8"))
    except OSError as e:
        return None, f"{path.name}: unreadable ({e.strerror or e})"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"{path.name}: not valid JSON"
    problem = check_report(data)
    if problem:
        return None, f"{path.name}: {problem}"
    return Report(path, path.stat().st_mtime, data), None


def find_reports(checkpoints: list[Path]) -> tuple[list[Report], list[str]]:
    """The reports of these checkpoints, newest first, and a note for each JSON file beside them that was skipped.

    A folder holding the checkpoints may hold other runs' checkpoints and reports (a shared ``model/``): only a report
    whose ``checkpoint`` has the file name of one of ``checkpoints`` is this run's. Hidden files (lit-imgcls's own
    records, ``.NAME.lit-imgcls.json``) are not looked at.
    """
    names = {p.name for p in checkpoints}
    folders: list[Path] = []
    for p in checkpoints:
        if p.parent not in folders:
            folders.append(p.parent)
    reports, notes = [], []
    for folder in folders:
        try:
            files = sorted(f for f in folder.iterdir() if f.suffix == ".json" and not f.name.startswith("."))
        except OSError:
            continue
        for path in files:
            report, why = read_report(path)
            if report is None:
                notes.append(f"skipped {why}")
            elif Path(report.data["checkpoint"]).name in names:
                reports.append(report)
    reports.sort(key=lambda r: (r.mtime, str(r.path)), reverse=True)
    return reports, notes


def row_shares(matrix: list[list[int]]) -> list[list[float]]:
    """Each count of a confusion matrix over its row's sum (the share of the true class's images), 0 for an empty
    row."""
    out = []
    for row in matrix:
        total = sum(row)
        out.append([v / total if total else 0.0 for v in row])
    return out
