"""Recipe builder: start from a recipe in recipes/, change the main keys, see each checked as you type."""

from __future__ import annotations

import dataclasses
import re
import threading
import typing
from pathlib import Path
from typing import Any

import yaml
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from lit_imgcls.recipe import Recipe

# (key, label, help shown as placeholder). Select fields get their choices in compose.
FIELDS: list[tuple[str, str, str]] = [
    ("dataset", "dataset", ""),
    ("network", "network", "type to search the registry and timm (parameter counts for 10 classes)"),
    ("data_dir", "data dir", "empty: the dataset's default"),
    ("data_train", "data train", "training data (folder dataset)"),
    ("data_val", "data val", "validation data"),
    ("num_examples", "num examples", "empty: all"),
    ("optimizer", "optimizer", ""),
    ("lr", "lr", "learning rate"),
    ("lr_schedule", "lr schedule", ""),
    ("lr_factor", "lr factor", "step/multistep decay factor"),
    ("lr_factor_epoch", "lr factor epoch", "step: epochs between decays"),
    ("lr_step_epochs", "lr step epochs", "multistep: e.g. 30,60"),
    ("warmup_epochs", "warmup epochs", ""),
    ("num_epochs", "epochs", ""),
    ("batch_size", "batch size", "per device"),
    ("gpus", "gpus", "empty: CPU; e.g. 0,1"),
    ("num_processes", "num processes", "CPU processes"),
    ("kv_store", "kv-store", ""),
    ("model_prefix", "model prefix", "checkpoint path prefix"),
]
SELECTS = {"dataset", "optimizer", "lr_schedule", "kv_store"}
AUTO = "(auto)"
SAVE_AS = "recipes/recipe.yaml"  # the builder's default file: beside the shipped recipes, found by --recipe
HINTS = typing.get_type_hints(Recipe)
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Recipe)}
# The registries load plugins lazily and are not thread-safe: the workers that check recipes take turns.
REGISTRY_LOCK = threading.Lock()
SMALL_INPUT = {"lenet", "mlp", "inception_bn_small"}  # networks built for 28/32-px images
_PARAMS: dict[str, int | None] = {}  # network name -> parameter count (10 classes), once computed


def parameter_count(name: str) -> int | None:
    """Parameters of ``name`` for 10 classes, built on torch's meta device (no memory, ~0.1 s); None if it fails."""
    if name not in _PARAMS:
        try:
            import torch

            from lit_imgcls.networks.factory import create_network

            small = name in SMALL_INPUT
            with REGISTRY_LOCK, torch.device("meta"):
                net = create_network(name, num_classes=10, in_chans=1 if small else 3, img_size=28 if small else 224)
            _PARAMS[name] = sum(p.numel() for p in net.parameters())
        except Exception:  # a name some timm versions list but cannot build: shown without a count
            _PARAMS[name] = None
    return _PARAMS[name]


def format_count(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"
# Words of the registry's and validate()'s messages that name a field.
ALIASES = {"kv-store": "kv_store", "strategy": "kv_store", "gpus": "gpus", "image_shape": None}


def coerce(key: str, text: str) -> Any:
    """A field's text as the recipe's type for ``key``; raises ValueError with a message for the field."""
    hint = HINTS[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    text = text.strip()
    if text == "" or text == AUTO:
        if optional:
            return None
        if base is str:
            return ""
        raise ValueError("a value is required")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
    if base is bool:
        return text.lower() in ("1", "true", "yes", "on")
    if typing.get_origin(base) is typing.Literal:
        if text not in typing.get_args(base):
            raise ValueError(f"must be one of {', '.join(typing.get_args(base))}")
        return text
    return text


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def error_field(message: str, keys: list[str]) -> str | None:
    """The field a validation message is about: the first field key (or alias) it names."""
    m = re.match(r"unknown (\S+) ", message)
    if m:
        word = m.group(1)
        word = ALIASES.get(word, word)
        if word in keys:
            return word
    best: tuple[int, str] | None = None
    for key in keys + [k for k in ALIASES if ALIASES[k]]:
        hit = re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", message)
        if hit:
            target = ALIASES.get(key, key) if key in ALIASES else key
            if target in keys and (best is None or hit.start() < best[0]):
                best = (hit.start(), target)
    if best is None and "schedule" in message:
        return "lr_schedule"
    return best[1] if best else None


def check(base: dict[str, Any], texts: dict[str, str]) -> tuple[dict[str, str], str | None, Recipe | None]:
    """(errors per field, an error no field owns, the recipe when valid): the CLI's types, then validate()."""
    with REGISTRY_LOCK:
        return _check(base, texts)


def _check(base: dict[str, Any], texts: dict[str, str]) -> tuple[dict[str, str], str | None, Recipe | None]:
    from lit_imgcls.recipe import validate

    errors: dict[str, str] = {}
    values = dict(base)
    for key, text in texts.items():
        try:
            values[key] = coerce(key, text)
        except ValueError as exc:
            errors[key] = str(exc)
            values[key] = DEFAULTS[key]  # while the other fields are checked
    # validate() stops at the first problem: each field it names gets the error and the recipe's default (valid on
    # its own), then the rest is checked again, so every wrong field is marked and counted, not just the first.
    for _ in range(len(texts) + 1):
        try:
            recipe = Recipe(**values)
        except TypeError as exc:
            return errors, str(exc), None
        try:
            validate(recipe)
        except Exception as exc:  # UsageError and the registries' UnknownNameError
            text = " ".join(str(exc).split())
            open_keys = [k for k in texts if k not in errors]
            # validate() says which key it refused (UsageError.key); the message's words are the fallback, for a
            # refusal that names no key (a class path's) or a key that is not a field here.
            key = getattr(exc, "key", None)
            key = key if key in open_keys else error_field(text, open_keys)
            if key is None:
                return errors, text, None
            errors[key] = text
            values[key] = DEFAULTS[key]
            continue
        if errors:
            return errors, None, None
        # validate() filled in this machine's data_nthreads; the saved recipe leaves it to the machine that runs it.
        recipe.data_nthreads = values.get("data_nthreads")
        return errors, None, recipe
    return errors, None, None


def recipe_files(folder: Path) -> list[Path]:
    """The recipes to start from, by file name: ``folder``'s (the user's, where the builder saves by default) and the
    shipped ones, so a folder holding only a recipe saved here still offers mnist.yaml and the rest."""
    from lit_imgcls.shipped import folder as shipped

    found: dict[str, Path] = {}
    for place in (shipped("recipes"), folder):  # the user's own last: a file of theirs of a shipped name wins
        if place.is_dir():
            found.update({p.name: p for p in place.glob("*.yaml")})
    return [found[name] for name in sorted(found)]


def load_base(path: Path | None) -> dict[str, Any]:
    values = dict(DEFAULTS)
    if path is not None:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        values.update({k: v for k, v in data.items() if k in DEFAULTS})
    return values


class NetworkInput(Input):
    """The network field: Up and Down move through the search list below it, Enter takes the highlighted name.

    An Input has no use for Up and Down, and the form around it would scroll with them instead."""

    BINDINGS = [
        Binding("down", "pick(1)", "Next network", show=False),
        Binding("up", "pick(-1)", "Previous network", show=False),
    ]

    def action_pick(self, delta: int) -> None:
        box = self.screen.query_one("#network-list", OptionList)
        if box.option_count:
            box.action_cursor_down() if delta > 0 else box.action_cursor_up()


class BuilderScreen(Screen):
    """The recipe form, its YAML, save and launch."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+l", "launch", "Save+launch"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.base: dict[str, Any] = dict(DEFAULTS)
        self.errors: dict[str, str] = {}
        self.general_error: str | None = None
        self.recipe: Recipe | None = None
        self.checked = False  # a check of the current fields has finished
        self.networks_shown = False  # the network list (with parameter counts) has been filled
        self._loading = False

    # -- layout ----------------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        from lit_imgcls.registry import datasets, strategies

        app = self.app
        files = recipe_files(app.recipes_dir)
        choices = {
            "dataset": datasets.names(),
            "optimizer": list(typing.get_args(HINTS["optimizer"])),
            "lr_schedule": [AUTO] + list(typing.get_args(typing.get_args(HINTS["lr_schedule"])[0])),
            "kv_store": strategies.names(),
        }
        yield Header()
        with Horizontal(id="builder"):
            with VerticalScroll(id="form"):
                with Horizontal(classes="field"):
                    yield Label("start from", classes="field-label")
                    yield Select([(p.name, str(p)) for p in files], id="base", allow_blank=True,
                                 value=str(files[[p.name for p in files].index("mnist.yaml")]) if any(p.name == "mnist.yaml" for p in files) else Select.NULL,
                                 classes="field-input")
                    yield Static("", classes="field-error")
                for key, label, hint in FIELDS:
                    with Horizontal(classes="field", id=f"row-{key}"):
                        yield Label(label, classes="field-label")
                        if key in SELECTS:
                            yield Select([(c, c) for c in choices[key]], id=f"f-{key}", allow_blank=False,
                                         classes="field-input")
                        else:
                            kind = NetworkInput if key == "network" else Input
                            yield kind(placeholder=hint, id=f"f-{key}", classes="field-input")
                        yield Static("", id=f"err-{key}", classes="field-error")
                    if key == "network":
                        yield OptionList(id="network-list")
            with Vertical(id="preview"):
                yield Label("[b]recipe (YAML)[/b]", classes="section-title")
                with VerticalScroll(id="yaml-box"):
                    yield Static("", id="yaml")
                with Horizontal(id="save-as"):
                    yield Label("save as", classes="save-label")
                    # a visible folder of the user's recipes (the CLI's --recipe reads it), never one under runs/
                    yield Input(SAVE_AS, id="save-path", classes="wide-input")
                with Horizontal(id="save-row"):
                    yield Button("Save", id="save", variant="primary")
                    yield Button("Launch", id="launch", variant="success")
                yield Static("", id="builder-status")
        yield Footer()

    def on_mount(self) -> None:
        base = self.query_one("#base", Select).value
        self.load(Path(base) if isinstance(base, str) else None)

    # -- filling and checking --------------------------------------------------------------------------------------
    def load(self, path: Path | None) -> None:
        """Takes every key from the recipe file (the form's fields and all others)."""
        try:
            self.base = load_base(path)
        except (OSError, yaml.YAMLError) as exc:
            self.notify(f"cannot read {path}: {exc}", severity="error")
            return
        self._loading = True
        for key, _, _ in FIELDS:
            widget = self.query_one(f"#f-{key}")
            value = self.base.get(key)
            if isinstance(widget, Select):
                text = AUTO if value is None and key == "lr_schedule" else as_text(value)
                options = [v for _, v in widget._options if isinstance(v, str)]
                if text in options:
                    widget.value = text
            else:
                widget.value = as_text(value)
        self._loading = False
        self.refresh_networks(as_text(self.base.get("network")))
        self.revalidate()

    def field_texts(self) -> dict[str, str]:
        texts = {}
        for key, _, _ in FIELDS:
            widget = self.query_one(f"#f-{key}")
            value = widget.value
            texts[key] = value if isinstance(value, str) else ""
        return texts

    def revalidate(self) -> None:
        self.checked = False
        self._check(dict(self.base), self.field_texts())

    @work(thread=True, exclusive=True, group="check")
    def _check(self, base: dict[str, Any], texts: dict[str, str]) -> None:
        result = check(base, texts)  # the registry may import timm the first time: not on the UI thread
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_check, texts, *result)

    def _show_check(self, texts: dict[str, str], errors: dict[str, str], general: str | None, recipe: Recipe | None) -> None:
        if texts != self.field_texts():
            return  # the fields changed meanwhile; their own check follows
        self.errors, self.general_error, self.recipe = errors, general, recipe
        for key, _, _ in FIELDS:
            self.query_one(f"#err-{key}", Static).update(errors.get(key, ""))
            self.query_one(f"#row-{key}").set_class(key in errors, "invalid")
        status = self.query_one("#builder-status", Static)
        if recipe is not None:
            self.query_one("#yaml", Static).update(recipe.to_yaml())
            status.update("[green]valid[/green]: Ctrl+S saves it, Ctrl+L saves and launches it")
        else:
            n = len(errors) + (1 if general else 0)
            status.update(f"[red]{n} problem{'s' if n != 1 else ''}[/red]" + (f": {general}" if general else ": see the fields marked red"))
        self.checked = True

    @on(Input.Changed, ".field-input")
    @on(Select.Changed, ".field-input")
    def _field_changed(self, event) -> None:
        if event.control.id == "base":
            value = event.value
            self.load(Path(value) if isinstance(value, str) else None)
            return
        if self._loading:
            return
        if event.control.id == "f-network":
            self.refresh_networks(event.value)
        self.revalidate()

    # -- the network search ----------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="networks")
    def refresh_networks(self, text: str) -> None:
        from lit_imgcls.registry import networks

        text = text.strip().lower()
        with REGISTRY_LOCK:
            registered = networks.names()
        names = [n for n in registered if text in n.lower()] or ([] if text else registered)
        if len(text) >= 2:
            try:
                import timm

                names += [n for n in timm.list_models(f"*{text}*") if n not in names][:60]
            except Exception:
                pass
        # the closest names first (exact, then prefix, then shorter): they get the parameter counts
        names.sort(key=lambda n: (n.lower() != text, not n.lower().startswith(text), len(n), n))
        worker = get_current_worker()
        shown = []
        for name in names[:60]:
            if worker.is_cancelled:
                return
            # counts for the first matches only: each costs ~0.1 s even on the meta device
            shown.append((name, parameter_count(name) if len(shown) < 12 else _PARAMS.get(name)))
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_networks, shown)

    def _show_networks(self, shown: list[tuple[str, int | None]]) -> None:
        box = self.query_one("#network-list", OptionList)
        box.clear_options()
        # the count first, right-aligned: a narrow list would wrap a count written after a long name
        box.add_options([Option(f"{format_count(count) if name in _PARAMS else '':>6}  {name}", id=name)
                         for name, count in shown])
        self.networks_shown = True

    @on(Input.Submitted, "#f-network")
    def _network_entered(self, event: Input.Submitted) -> None:
        box = self.query_one("#network-list", OptionList)
        if box.highlighted is not None and box.option_count:
            event.input.value = str(box.get_option_at_index(box.highlighted).id)

    @on(OptionList.OptionSelected, "#network-list")
    def _network_picked(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#f-network", Input).value = str(event.option.id)

    # -- save and launch -------------------------------------------------------------------------------------------
    def save(self) -> str | None:
        """Writes the recipe when every field is valid; returns its path, or None (the reason is shown)."""
        status = self.query_one("#builder-status", Static)
        if not self.checked or self.recipe is None:
            status.update("[red]not saved[/red]: the recipe has problems (marked red)" if self.checked
                          else "[yellow]still checking[/yellow]: try again in a moment")
            self.notify("the recipe is not valid: fix the fields marked red", severity="error")
            return None
        path = Path(self.query_one("#save-path", Input).value.strip() or "recipe.yaml")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.recipe.to_yaml())
        except OSError as exc:
            status.update(f"[red]cannot save {path}: {exc}[/red]")
            return None
        self.app.recipe_path = str(path)
        status.update(f"saved {path}")
        return str(path)

    def action_save(self) -> None:
        self.save()

    def action_launch(self) -> None:
        path = self.save()
        if path is not None:
            self.app.launch_fit(path)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.action_launch()
