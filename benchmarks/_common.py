"""Shared pieces of the benchmark scripts: machine description and writing results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}"


def stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command() -> str:
    return " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]])


def save(name: str, payload: dict) -> Path:
    """Writes ``benchmarks/results/<name>.json`` (the figures docs/BENCHMARKS.md quotes)."""
    out = Path(__file__).resolve().parent / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    payload = {"command": command(), "machine": machine(), "date": stamp(), **payload}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        rev = ""
    print(f"saved {out} (commit {rev or '?'})")
    return out


def print_medians(median: dict[str, float], what: str) -> None:
    """One line per variant: its median ``what`` ("test accuracy") and, beside all but ``none``, the lift over
    ``none`` in percentage points."""
    base = median.get("none")
    for name, value in median.items():
        lift = f"  {100 * (value - base):+.2f} points" if base is not None and name != "none" else ""
        print(f"{name:8s} median {what} {value:.4f}{lift}")
