"""Prediction results and their output formats (table for people, JSON and CSV for programs)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """Top-k (class, probability) of one input, or why it could not be predicted."""

    input: str
    predictions: list[tuple[str, float]] = field(default_factory=list)
    label: str | None = None
    error: str | None = None


def format_table(results: list[Result]) -> str:
    """One aligned row per input: the input, then "class probability" for each of the top k."""
    if not results:
        return ""
    width = max(len(r.input) for r in results)
    cw = max([len(c) for r in results for c, _ in r.predictions] or [1])
    lines = []
    for r in results:
        if r.error is not None:
            lines.append(f"{r.input:<{width}}  error: {r.error}")
        else:
            cells = "  ".join(f"{c:>{cw}} {p:6.4f}" for c, p in r.predictions)
            lines.append(f"{r.input:<{width}}  {cells}")
    return "\n".join(lines) + "\n"


def format_json(results: list[Result]) -> str:
    import json

    docs = []
    for r in results:
        doc: dict[str, Any] = {"input": r.input}
        if r.label is not None:
            doc["label"] = r.label
        if r.error is not None:
            doc["error"] = r.error
        doc["predictions"] = [{"class": c, "probability": p} for c, p in r.predictions]
        docs.append(doc)
    return json.dumps(docs, indent=1) + "\n"


def format_csv(results: list[Result]) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["input", "rank", "class", "probability"])
    for r in results:
        for rank, (c, p) in enumerate(r.predictions, 1):
            writer.writerow([r.input, rank, c, f"{p:.6g}"])
    return buf.getvalue()


FORMATS: dict[str, Callable[[list[Result]], str]] = {"table": format_table, "json": format_json, "csv": format_csv}
