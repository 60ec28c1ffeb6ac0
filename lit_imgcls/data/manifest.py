"""The JSON manifest beside packed shards: classes, counts, checksums, options. Written last, read first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_imgcls.errors import UsageError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def manifest_path(out: str | Path) -> Path:
    p = Path(out)
    return p if p.name == MANIFEST else p / MANIFEST


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of a pack folder (or the manifest file itself); a missing or broken one is a clear error."""
    path = manifest_path(out)
    if not path.is_file():
        raise UsageError(f"no {MANIFEST} in {path.parent}: not a finished pack (an interrupted pack leaves none)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION or "splits" not in data:
        raise UsageError(f"{path} is not a lit-imgcls pack manifest (format_version {FORMAT_VERSION})")
    return data


def label_runs(labels: list[int]) -> tuple[int, int, float]:
    """Longest run of one label in storage order, its label, and the share of neighbours with equal labels."""
    if not labels:
        return 0, -1, 0.0
    best, best_label, run, same = 1, labels[0], 1, 0
    for a, b in zip(labels, labels[1:]):
        if a == b:
            run += 1
            same += 1
            if run > best:
                best, best_label = run, b
        else:
            run = 1
    return best, best_label, same / max(1, len(labels) - 1)


def unshuffled_warning(labels: list[int], class_names: list[str]) -> str | None:
    """A warning when storage order looks sorted by class, saying what that does to training."""
    k = max(2, len(class_names))
    longest, label, same = label_runs(labels)
    # Shuffled data has neighbours of one class about 1/k of the time and runs of a few samples.
    if len(labels) >= 4 * k and (same > min(0.9, 3.0 / k + 0.05) or longest > max(30, len(labels) // 4)):
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        return (
            f"labels are stored in long runs (longest: {longest} samples of class {name!r}; {same:.0%} of "
            "neighbours share a label): this pack is not shuffled. A loader's shuffle buffer holds a few thousand "
            "samples, so training would see one class at a time and accuracy can sit at chance for whole epochs "
            "(MXNet's im2rec warning). Re-pack without --no-shuffle."
        )
    return None
