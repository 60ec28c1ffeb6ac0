"""Recipe keys that name Python classes (``callbacks: [{class_path: ..., init_args: {...}}]``), limited to plugins.

Importing a module runs its code, and a recipe is a file anyone may hand over. So a recipe names a class only
through the registries: a registered name (``early_stopping``), or the exact path that a registered entry of any
registry points to (``lightning.pytorch.callbacks.EarlyStopping``, as ``early_stopping`` does). Any other path is
refused before anything is imported, unless the person at the keyboard passes ``--allow-any-class``: that switch
exists on the command line only, so a recipe file cannot grant it to itself.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from lit_imgcls.errors import UsageError

ALLOW_FLAG = "--allow-any-class"
ITEM_KEYS = ("class_path", "init_args")


@dataclass(frozen=True)
class ClassRef:
    """One checked ``class_path`` of a recipe, not imported yet.

    Args:
        where: the item, for messages ("callbacks[0]").
        class_path: as the recipe wrote it.
        name: the registry name when ``class_path`` is one, else None.
        module: the module to import for a dotted path.
        attr: the (possibly dotted) attribute of ``module``.
        init_args: keyword arguments for the class.
    """

    where: str
    class_path: str
    name: str | None
    module: str
    attr: str
    init_args: dict[str, Any]


def _split_path(path: str) -> tuple[str, str] | None:
    """``pkg.mod:Class`` or ``pkg.mod.Class`` -> (module, attr); None when it is not such a path."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    parts = module.split(".") + attr.split(".")
    if not module or not attr or not all(p.isidentifier() for p in parts):
        return None
    return module, attr


def registered_paths() -> dict[str, str]:
    """``"module.attr"`` of every registered entry of every registry -> who registered it ("callbacks swa").

    Read from the entry points' declarations: nothing is imported.
    """
    from lit_imgcls.registry import ALL

    paths = {}
    for kind, registry in ALL.items():
        for name, target in registry.targets().items():
            module, _, attr = target.partition(":")
            paths.setdefault(f"{module}.{attr}", f"{kind} {name}")
    return paths


def _item(index: int, item: Any) -> tuple[str, dict[str, Any]]:
    """The (class_path, init_args) of one item, its shape checked."""
    where = f"callbacks[{index}]"
    shape = "a mapping {class_path: NAME_OR_PATH, init_args: {...}}"
    if not isinstance(item, dict):
        raise UsageError(f"{where} must be {shape}, got {type(item).__name__}")
    extra = [str(k) for k in item if k not in ITEM_KEYS]
    if extra:
        raise UsageError(f"{where} has unknown key {extra[0]!r}; valid keys: {', '.join(ITEM_KEYS)}")
    class_path = item.get("class_path")
    if not isinstance(class_path, str) or not class_path.strip():
        raise UsageError(f"{where} needs class_path: a registered callback name or a dotted path pkg.mod.Class")
    init_args = item.get("init_args")
    if init_args is None:
        init_args = {}
    if not isinstance(init_args, dict) or not all(isinstance(k, str) for k in init_args):
        raise UsageError(f"{where} init_args must be a mapping of argument names to values, got {init_args!r:.80}")
    odd = _not_plain(init_args)
    if odd is not None:
        raise UsageError(f"{where} init_args may hold only text, numbers, booleans, null, lists and mappings, "
                         f"got a {type(odd).__name__}: {odd!r:.60}")
    return class_path.strip(), init_args


_PLAIN = (str, int, float, bool, type(None))


def _not_plain(value: Any) -> Any:
    """The first value inside ``value`` that is not plain data, or None.

    The recipe is saved inside every checkpoint, which is read back with ``weights_only=True``: a date there
    (``!!timestamp``) would make the run's own checkpoints unreadable. Callbacks' arguments are plain data anyway.
    """
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            if id(item) not in seen:  # a structure built in Python may contain itself
                seen.add(id(item))
                stack += [*item.keys(), *item.values()] if isinstance(item, dict) else item
        elif not isinstance(item, _PLAIN):
            return item
    return None


def check_class_paths(recipe: Any, allow_any_class: bool = False) -> list[ClassRef]:
    """Checks every ``class_path`` of ``recipe.callbacks`` without importing anything.

    Args:
        recipe: the recipe (its ``callbacks`` may be None).
        allow_any_class: whether ``--allow-any-class`` was given: any dotted path passes.

    Returns:
        One :class:`ClassRef` per item, ready for :func:`build_callbacks`.

    Raises:
        UsageError: a malformed item, an unknown name, or a path no registered entry points to (without
            ``allow_any_class``), in one line that names the item, the registered names and the switch.
    """
    from lit_imgcls.registry import callbacks as registry

    items = recipe.callbacks
    if items is None:
        return []
    if not isinstance(items, list):
        raise UsageError(f"callbacks must be a list of {{class_path: ..., init_args: {{...}}}} items, got {type(items).__name__}")
    names = ", ".join(registry.names()) or "none"
    refs = []
    for index, item in enumerate(items):
        where = f"callbacks[{index}]"
        class_path, init_args = _item(index, item)
        if ":" not in class_path and "." not in class_path:
            if class_path not in registry:
                close = difflib.get_close_matches(class_path, registry.names(), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"{where}: unknown callback {class_path!r}{hint} registered callbacks: {names} "
                                 f"(another class takes a dotted path pkg.mod.Class and {ALLOW_FLAG})")
            refs.append(ClassRef(where, class_path, class_path, "", "", init_args))
            continue
        split = _split_path(class_path)
        if split is None:
            raise UsageError(f"{where}: class_path {class_path!r} is neither a registered callback ({names}) "
                             "nor a dotted path like pkg.mod.Class or pkg.mod:Class")
        module, attr = split
        if not allow_any_class and f"{module}.{attr}" not in registered_paths():
            raise UsageError(f"{where}: class_path {class_path!r} refused: a recipe names only registered plugins "
                             f"(callbacks: {names}) or the exact path a registered plugin points to; "
                             f"{ALLOW_FLAG} on the command line lifts this limit and imports module {module!r}")
        refs.append(ClassRef(where, class_path, None, module, attr, init_args))
    return refs


def _load(ref: ClassRef) -> Any:
    """The object ``ref`` names; an import that fails for any reason is the recipe's problem, told in one line."""
    from lit_imgcls.registry import callbacks as registry

    if ref.name is not None:
        return registry.get(ref.name)  # a broken plugin already fails here with one line naming itself
    try:
        obj = importlib.import_module(ref.module)
    except ModuleNotFoundError as exc:
        raise UsageError(f"{ref.where}: cannot import {ref.module!r} for class_path {ref.class_path!r}: {exc}") from None
    except Exception as exc:  # the module's own code ran and raised: whatever it is, it is that module's fault
        raise UsageError(f"{ref.where}: importing {ref.module!r} for class_path {ref.class_path!r} failed: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    for part in ref.attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{ref.where}: module {ref.module!r} has no {ref.attr!r} (class_path {ref.class_path!r})")
        obj = getattr(obj, part)
    return obj


def _check_init_args(ref: ClassRef, cls: type) -> None:
    """A misspelt or missing argument named against the class's signature, before the class runs any code."""
    try:
        signature = inspect.signature(cls)
    except ValueError:  # no signature to check against (a C type): calling it tells
        return
    params = signature.parameters
    named = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    takes_any = any(v.kind is v.VAR_KEYWORD for v in params.values())
    accepted = ", ".join(named)
    for key in ref.init_args:
        if key not in params and not takes_any:
            close = difflib.get_close_matches(key, named, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{ref.where}: {ref.class_path} has no argument {key!r}{hint} it accepts: {accepted}")
    try:
        signature.bind(**ref.init_args)
    except TypeError as exc:
        raise UsageError(f"{ref.where}: {ref.class_path} init_args: {exc}; it accepts: {accepted}") from None


def build_callbacks(recipe: Any, allow_any_class: bool = False) -> list:
    """The Lightning callbacks of ``recipe.callbacks``: checked, imported, made with their ``init_args``.

    Args:
        recipe: the recipe.
        allow_any_class: whether ``--allow-any-class`` was given on the command line.

    Returns:
        The callback instances, in the recipe's order.

    Raises:
        UsageError: a refused or unknown class_path, a module that does not import, a class that is not a
            Lightning Callback, or init_args it does not accept.
    """
    from lightning.pytorch import Callback

    built = []
    for ref in check_class_paths(recipe, allow_any_class):
        cls = _load(ref)
        # Checked before calling it: a registered path may name a network factory, which must not run here.
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise UsageError(f"{ref.where}: {ref.class_path!r} is not a Lightning Callback class "
                             f"(it is a {type(cls).__name__})")
        _check_init_args(ref, cls)
        try:
            built.append(cls(**ref.init_args))
        except Exception as exc:  # the class's own argument checks (MisconfigurationException, ValueError, ...)
            raise UsageError(f"{ref.where}: {ref.class_path} rejects its init_args: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    return built
