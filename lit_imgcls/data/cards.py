"""Dataset cards: ``datasets/<name>.yaml`` of the source tree, shipped in the package as ``lit_imgcls/cards/``
(sources, checksums, classes, mean/std, licence)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from lit_imgcls.errors import UsageError


def cards_dir() -> Path:
    """``$LIT_IMGCLS_CARDS`` or the shipped cards (an installed package's ``lit_imgcls/cards``, found through
    ``importlib.resources``, or the source tree's ``datasets/``; see :mod:`lit_imgcls.shipped`)."""
    if "LIT_IMGCLS_CARDS" in os.environ:
        return Path(os.environ["LIT_IMGCLS_CARDS"])
    from lit_imgcls.shipped import folder

    return folder("datasets")


@lru_cache(maxsize=None)
def load_card(name: str) -> dict[str, Any]:
    path = cards_dir() / f"{name}.yaml"
    if not path.is_file():
        raise UsageError(f"no dataset card {path}")
    with path.open() as f:
        return yaml.safe_load(f)
