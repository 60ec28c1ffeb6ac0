"""The files lit-imgcls ships beside its code: the recipes (``recipes/``) and the dataset cards (``datasets/``).

In the source tree they are the top-level folders ``recipes/`` and ``datasets/``. A wheel carries them inside the
package, as ``lit_imgcls/recipes/`` and ``lit_imgcls/cards/`` (pyproject.toml's ``package-dir`` maps the packages
``lit_imgcls.recipes`` and ``lit_imgcls.cards`` to the two folders, ``package-data`` takes their ``*.yaml``).
:func:`folder` looks inside the imported package first, through ``importlib.resources``, then beside it: an
installed wheel finds its own copy, a source checkout (installed editable, or imported from its folder) its own
folders, never another checkout's.

``--recipe NAME`` (a bare name: no folder, no ``.yaml``) names a shipped recipe (:func:`resolve_recipe_arg`).
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import re
from pathlib import Path

from lit_imgcls.errors import UsageError, quoted

# source-tree folder -> its folder inside the installed package
_INSIDE = {"recipes": "recipes", "datasets": "cards"}


def folder(name: str) -> Path:
    """The folder of shipped files ``name`` ("recipes" or "datasets"): the installed package's copy
    (``lit_imgcls/recipes``, ``lit_imgcls/cards``) if it has one, else the source tree's top-level folder."""
    inside = importlib.resources.files("lit_imgcls") / _INSIDE[name]
    if inside.is_dir():
        # A package installed as files (every wheel pip installs) gives a pathlib.Path; the recipes are handed to
        # the parser as file paths.
        return Path(str(inside))
    return Path(__file__).resolve().parent.parent / name


def recipe_names() -> list[str]:
    """The shipped recipes' names (their file names without ``.yaml``), sorted."""
    recipes = folder("recipes")
    return sorted(p.stem for p in recipes.glob("*.yaml")) if recipes.is_dir() else []


def recipe_path(name: str) -> Path | None:
    """The shipped recipe ``name``'s file, or None when there is no such recipe."""
    if name not in recipe_names():  # a name like "../x" never leaves the folder
        return None
    return folder("recipes") / f"{name}.yaml"


def recipe_summary(path: Path) -> str:
    """The first sentence of a recipe file's opening comment (what it trains), or ""."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(" ".join(lines).split())
    end = re.search(r"\.(\s|$)", text)  # "LR 0.1" is not the end of a sentence
    return text[:end.start() + 1] if end else text


def is_bare_name(value: str) -> bool:
    """``mnist`` or ``mnist-mlp``: no folder and no YAML suffix, so a shipped recipe's name."""
    return "/" not in value and os.sep not in value and not value.endswith((".yaml", ".yml"))


def resolve_recipe_arg(value: str) -> str:
    """What ``--recipe VALUE`` reads: ``VALUE`` itself when it is a file (or anything but a folder) that exists, or
    is not a bare name; else the shipped recipe of that name.

    Raises:
        UsageError: a bare name that is neither a file here nor a shipped recipe (the message lists them).
    """
    if not is_bare_name(value) or (os.path.lexists(value) and not os.path.isdir(value)):
        return value
    path = recipe_path(value)
    if path is not None:
        return str(path)
    names = recipe_names()
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    where = "a folder, not a recipe file" if os.path.isdir(value) else "no such file"
    raise UsageError(f"unknown recipe {quoted(value)} ({where}, and no shipped recipe of that name){hint} "
                     f"shipped recipes: {', '.join(names) or 'none'}")


def missing_file_hint(value: str) -> str:
    """For a recipe path that does not exist: the shipped recipe of the same name, if there is one."""
    stem = Path(value).name
    for suffix in (".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    return f"; the shipped recipe of that name is --recipe {stem}" if stem in recipe_names() else ""


# A shipped recipe's header line naming the one command that makes a path it reads:
#   # prepare data/packs/photos-train data/packs/photos-val: lit-imgcls dataset photos data/photos && ...
_PREPARE = re.compile(r"^#\s*prepare\s+([^:]+):\s*(\S.*)$")


def prepare_hint(path: str) -> str:
    """For a data or weights path that does not exist: ``"; to make it: COMMAND"`` when a shipped recipe's
    ``# prepare PATH...: COMMAND`` header line names that path (as written, or as the same absolute path), else "".
    A path a shipped recipe reads thus says how to make it, whether it came from the recipe or a flag."""
    folder_ = folder("recipes")
    wanted = os.path.normpath(os.path.abspath(path))
    for name in recipe_names():
        for line in (folder_ / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            match = _PREPARE.match(line)
            if match and wanted in {os.path.normpath(os.path.abspath(p)) for p in match.group(1).split()}:
                return f"; to make it: {match.group(2).strip()}"
    return ""
