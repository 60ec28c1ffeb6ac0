"""Dataset cards: ``datasets/<name>.yaml`` beside the package (sources, checksums, classes, mean/std, licence)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from lit_imgcls.errors import UsageError


def cards_dir() -> Path:
    """``$LIT_IMGCLS_CARDS`` or the ``datasets/`` folder of the source tree."""
    return Path(os.environ.get("LIT_IMGCLS_CARDS", Path(__file__).resolve().parents[2] / "datasets"))


@lru_cache(maxsize=None)
def load_card(name: str) -> dict[str, Any]:
    path = cards_dir() / f"{name}.yaml"
    if not path.is_file():
        raise UsageError(f"no dataset card {path}")
    with path.open() as f:
        return yaml.safe_load(f)
