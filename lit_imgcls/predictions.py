"""Prediction results and their output formats (table for people, JSON and CSV for programs)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lit_imgcls.printable import printable


@dataclass
class Result:
    """Top-k (class, probability) of one input, or why it could not be predicted."""

    input: str
    predictions: list[tuple[str, float]] = field(default_factory=list)
    label: str | None = None
    error: str | None = None


def format_table(results: list[Result]) -> str:
    """A header line (``input``, ``label`` when any input is a pack sample with a true class, ``top-1`` ...
    ``top-k``), then one aligned row per input: the input, its true class (``-`` where unknown), then "class
    probability" for each of the top k, or the error. Inputs, class names and errors are printed through
    :func:`~lit_imgcls.printable.printable` (no terminal escapes, no fake lines)."""
    if not results:
        return ""
    inputs = [printable(r.input) for r in results]
    width = max(len(i) for i in [*inputs, "input"])
    cw = max([len(printable(c)) for r in results for c, _ in r.predictions] or [1])
    k = max(len(r.predictions) for r in results)
    labelled = any(r.label is not None for r in results)
    marks = [printable(r.label) if r.label is not None else "-" for r in results]
    lw = max(len(m) for m in [*marks, "label"])
    # Each cell is "class probability", the class right-aligned: a heading starts where the widest class does.
    heads = "  ".join(f"{'top-' + str(i):<{cw + 7}}" for i in range(1, k + 1))
    lines = [(f"{'input':<{width}}  " + (f"{'label':<{lw}}  " if labelled else "") + heads).rstrip()]
    for r, shown, mark in zip(results, inputs, marks):
        row = f"{shown:<{width}}  " + (f"{mark:<{lw}}  " if labelled else "")
        if r.error is not None:
            lines.append(f"{row}error: {printable(r.error)}")
        else:
            lines.append(row + "  ".join(f"{printable(c):>{cw}} {p:6.4f}" for c, p in r.predictions))
    return "\n".join(lines) + "\n"


def format_json(results: list[Result]) -> str:
    """One JSON document: a list of {input, label?, error?, predictions: [{class, probability}]}. Strings keep
    their exact text (JSON escapes control characters itself); a probability that is not finite (a network that
    gives NaN) is null, since bare NaN is not JSON."""
    import json
    import math

    docs = []
    for r in results:
        doc: dict[str, Any] = {"input": r.input}
        if r.label is not None:
            doc["label"] = r.label
        if r.error is not None:
            doc["error"] = r.error
        doc["predictions"] = [{"class": c, "probability": p if math.isfinite(p) else None} for c, p in r.predictions]
        docs.append(doc)
    return json.dumps(docs, indent=1, allow_nan=False) + "\n"


def format_csv(results: list[Result]) -> str:
    """input,rank,class,probability rows; inputs and class names through
    :func:`~lit_imgcls.printable.printable`, as in the table (csv output is read in terminals too)."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["input", "rank", "class", "probability"])
    for r in results:
        for rank, (c, p) in enumerate(r.predictions, 1):
            writer.writerow([printable(r.input), rank, printable(c), f"{p:.6g}"])
    return buf.getvalue()


FORMATS: dict[str, Callable[[list[Result]], str]] = {"table": format_table, "json": format_json, "csv": format_csv}
