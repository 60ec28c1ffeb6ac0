"""Named registries filled from Python entry points.

Each registry maps a name to an object (a network factory, a DataModule class, a format, a strategy factory).
lit-imgcls's own plugins are declared as entry points in its ``pyproject.toml``, exactly like a third party's, so
there is one path for both: install a distribution that declares ``[project.entry-points."lit_imgcls.networks"]``
and its names appear here, no edit of lit-imgcls needed.
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from lit_imgcls.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with lazily loaded entry points.

    Args:
        kind: what the entries are, for messages ("network").
        group: the entry-point group that fills it ("lit_imgcls.networks").
        normalize: maps a user-typed name to its key (e.g. dashes to underscores).
        fallback: names (and a lookup) served by another library when not registered here; the lookup returns
            ``None`` for names it does not know either.
        fallback_hint: how to list the fallback's names, for the unknown-name message.
        fallback_names: the fallback's names, searched with the registered ones for the unknown-name message's
            "did you mean" (a typo of a timm model gets the timm model).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        normalize: Callable[[str], str] = lambda name: name,
        fallback: Callable[[str], T | None] | None = None,
        fallback_hint: str = "",
        fallback_names: Callable[[], list[str]] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._normalize = normalize
        self._fallback = fallback
        self._fallback_hint = fallback_hint
        self._fallback_names = fallback_names
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._targets: dict[str, str] = {}  # name -> "module:attr" it points to, known without importing it
        self._pending: dict[str, object] = {}  # entry points discovered but not imported yet
        self._discovered = False

    def register(self, name: str, obj: T, *, override: bool = False, origin: str = "runtime") -> T:
        """Adds ``obj`` under ``name``; a second registration of a name raises unless ``override``."""
        key = self._normalize(name)
        self._discover()
        if not override and (key in self._entries or key in self._pending):
            raise DuplicateNameError(
                f"{self.kind} {key!r} is already registered by {self._origins[key]}; "
                f"pass override=True to replace it with the one from {origin}"
            )
        self._pending.pop(key, None)
        self._entries[key] = obj
        self._origins[key] = origin
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
            self._targets[key] = f"{module}:{qualname}"
        else:  # an instance or a lambda names no importable path
            self._targets.pop(key, None)
        return obj

    def unregister(self, name: str) -> None:
        """Removes a name added at run time (a test's or a session's own plugin); unknown names raise KeyError."""
        key = self._normalize(name)
        self._discover()
        if key not in self._entries and key not in self._pending:
            raise KeyError(f"{self.kind} {name!r} is not registered")
        for table in (self._entries, self._pending, self._origins, self._targets):
            table.pop(key, None)

    def get(self, name: str) -> T:
        """Returns the entry for ``name``; an unknown name raises with the list of choices."""
        key = self._normalize(name)
        self._discover()
        if key in self._pending:
            self._load(key)
        if key in self._entries:
            return self._entries[key]
        if self._fallback is not None:
            found = self._fallback(key)
            if found is not None:
                return found
        candidates = self.names()
        if self._fallback_names is not None:
            candidates += self._fallback_names()
        close = difflib.get_close_matches(key, candidates, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        extra = f" {self._fallback_hint}" if self._fallback_hint else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} choices: {', '.join(self.names())}{extra}")

    def origin(self, name: str) -> str:
        """Which distribution (or 'runtime') registered ``name``."""
        self._discover()
        return self._origins[self._normalize(name)]

    def targets(self) -> dict[str, str]:
        """Name -> ``"module:attr"`` each entry points to, read from the entry points without importing them."""
        self._discover()
        return dict(self._targets)

    def names(self) -> list[str]:
        """All registered names, sorted, without importing their plugins."""
        self._discover()
        return sorted({*self._entries, *self._pending})

    def __contains__(self, name: str) -> bool:
        self._discover()
        key = self._normalize(name)
        return key in self._entries or key in self._pending

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in entry_points(group=self.group):
            key = self._normalize(ep.name)
            origin = f"{ep.dist.name if ep.dist else '?'} ({ep.value})"
            if key in self._pending or key in self._entries:
                # Two installed distributions claim one name: refuse to guess which one the user meant.
                raise DuplicateNameError(
                    f"{self.kind} {key!r} is declared twice: by {self._origins[key]} and by {origin}"
                )
            self._pending[key] = ep
            self._origins[key] = origin
            self._targets[key] = f"{ep.module}:{ep.attr}"

    def _load(self, key: str) -> None:
        ep = self._pending.pop(key)
        try:
            obj = ep.load()  # type: ignore[attr-defined]
        except Exception as exc:  # a broken plugin must name itself, not crash with a bare ImportError
            raise UnknownNameError(f"{self.kind} {key!r} from {self._origins[key]} failed to load: {exc}") from exc
        self._entries[key] = obj


def _timm_network(name: str):
    import timm

    return name if timm.is_model(name) else None


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()  # ~1,300 architectures: difflib searches them in well under a second


def _normalize_network(name: str) -> str:
    # timm names use underscores; MXNet's use dashes ("inception-bn").
    return name.strip().replace("-", "_")


networks: Registry = Registry(
    "network",
    "lit_imgcls.networks",
    normalize=_normalize_network,
    fallback=_timm_network,
    fallback_hint="(or any timm model: `lit-imgcls list networks --timm`)",
    fallback_names=_timm_names,
)
"""Network factories (timm-style: ``fn(pretrained=False, num_classes=..., in_chans=..., **kw) -> nn.Module``)."""

datasets: Registry = Registry("dataset", "lit_imgcls.datasets")
"""DataModule classes with a ``from_recipe(recipe)`` class method."""

formats: Registry = Registry("data format", "lit_imgcls.formats")
"""Packed-shard formats (FFCV, WebDataset): writers and DataModules."""

strategies: Registry = Registry("kv-store", "lit_imgcls.strategies")
"""kv-store names -> ``fn(recipe, num_devices) -> Lightning strategy (name or object)``."""

callbacks: Registry = Registry("callback", "lit_imgcls.callbacks", normalize=lambda name: name.strip().replace("-", "_"))
"""Lightning Callback classes a recipe's ``callbacks`` key may name (``class_path: early_stopping``)."""

augmentations: Registry = Registry("augmentation stage", "lit_imgcls.augmentations",
                                   normalize=lambda name: name.strip().replace("-", "_"))
"""Stage factories a recipe's ``augment`` list may name: ``fn(ctx, **args) -> callable`` (see
:mod:`lit_imgcls.data.augment`)."""

ALL: dict[str, Registry] = {"networks": networks, "datasets": datasets, "formats": formats, "strategies": strategies,
                            "callbacks": callbacks, "augmentations": augmentations}
