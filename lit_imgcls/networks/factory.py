"""Build any registered or timm network by name, and load weights from a local file."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from lit_imgcls.errors import UsageError
from lit_imgcls.registry import networks


def _timm_register(key: str, fn) -> None:
    """Puts a lit-imgcls/plugin factory into timm's registry so ``timm.create_model(key)`` builds it too."""
    import timm
    from timm.models import register_model

    if timm.is_model(key) and getattr(timm.models.model_entrypoint(key), "_lit_imgcls_source", None) is fn:
        return

    def entry(**kwargs):
        return fn(**kwargs)

    entry.__name__ = key
    entry.__qualname__ = key
    entry.__module__ = fn.__module__
    entry.__doc__ = fn.__doc__
    entry._lit_imgcls_source = fn  # type: ignore[attr-defined]
    entry._lit_imgcls_img_size = "img_size" in inspect.signature(fn).parameters  # type: ignore[attr-defined]
    register_model(entry)


def resolve_name(network: str, num_layers: int | None = None) -> str:
    """MXNet's ``--network resnet --num-layers 50`` means timm's ``resnet50``; a full name is kept as is: one with
    digits, or one that names a network already (``inception-bn``, ``convnext_tiny``), which ignores the depth as
    MXNet's did (``train_imagenet.py --network inception-bn`` with its default ``--num-layers 50``)."""
    from lit_imgcls.registry import UnknownNameError

    name = network.strip()
    if num_layers is not None and not re.search(r"\d", name):
        try:
            networks.get(name)
        except UnknownNameError:
            name = f"{name}{num_layers}"
    return name


def network_key(network: str, num_layers: int | None = None) -> str:
    """The name a network is built under: MXNet's depth applied (:func:`resolve_name`) and the registry's spelling
    (``inception-bn`` is ``inception_bn``), e.g. for naming a run's folder."""
    return networks._normalize(resolve_name(network, num_layers))


def create_network(
    network: str,
    num_classes: int,
    in_chans: int = 3,
    img_size: int | tuple[int, int] | None = None,
    num_layers: int | None = None,
    pretrained: str | None = None,
    **kwargs,
) -> nn.Module:
    """Builds ``network`` through ``timm.create_model``; lit-imgcls and plugin networks are registered into timm first.

    Args:
        network: a registry name (``lenet``, ``inception-bn``) or any timm model name (``resnet18``).
        num_classes: classes of the classifier head.
        in_chans: image channels.
        img_size: image side, or (H, W), for networks whose layer sizes depend on it (lenet, mlp).
        num_layers: MXNet's depth flag, appended to a name without digits (``resnet`` + 50).
        pretrained: a local file with weights (lit-imgcls checkpoint, timm or plain state_dict, safetensors).
        kwargs: passed to the network's factory.

    Raises:
        UsageError: an unknown name, options the network does not take, or settings it refuses (images too
            small for it).
    """
    import timm

    name = resolve_name(network, num_layers)
    found = networks.get(name)  # raises with the choices for an unknown name
    key = network_key(network, num_layers)
    if callable(found):
        _timm_register(key, found)
        if getattr(timm.models.model_entrypoint(key), "_lit_imgcls_img_size", False) and img_size:
            kwargs["img_size"] = img_size
    try:
        model = timm.create_model(key, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise UsageError(f"network {key!r} does not accept these options {sorted(kwargs)}: {exc}") from exc
    except (ValueError, AssertionError) as exc:  # a network's own check of its settings (lenet: images >= 16 px)
        raise UsageError(f"network {key!r} cannot be built for this data: {' '.join(str(exc).split())}; choose "
                         "another --network or --image-shape") from None
    if pretrained:
        load_pretrained(model, pretrained, network=name)
    return model


def network_names(include_timm: bool = False) -> list[str]:
    """Registered names, and with ``include_timm`` every timm model name too."""
    names = networks.names()
    if include_timm:
        import timm

        names = sorted({*names, *timm.list_models()})
    return names


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with each tensor of the file."""

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the file, but shape differs from the model's
    new: list[str] = field(default_factory=list)  # in the model, not in the file: freshly initialised
    unused: list[str] = field(default_factory=list)  # in the file, no such tensor in the model
    other_classes: list[str] = field(default_factory=list)  # the classifier, left out: trained on other classes

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.other_classes:
            parts.append(f"classifier not loaded ({', '.join(self.other_classes[:4])}): it was trained on other "
                         "classes than the data's, so it starts fresh")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} with other shapes ({', '.join(self.skipped[:4])})")
        if self.new:
            parts.append(f"{len(self.new)} new ({', '.join(self.new[:4])})")
        if self.unused:
            parts.append(f"{len(self.unused)} unused ({', '.join(self.unused[:4])})")
        return "; ".join(parts)


_PREFIXES = ("net.", "model.", "module.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict:
    """Reads tensors from a local file without running any code in it (``weights_only=True`` or safetensors)."""
    return read_weights(path)[0]


def read_weights(path: str | Path):
    """The tensors of a local weights file and, for a lit-imgcls checkpoint, its checked meta
    (:class:`~lit_imgcls.checkpoint_meta.CheckpointMeta`: class names, the network it was trained with), else None.

    Nothing in the file runs (``weights_only=True`` or safetensors).

    Raises:
        UsageError: a URL, a missing or unreadable file, one without a state_dict, or a lit-imgcls checkpoint with
            malformed meta (:func:`~lit_imgcls.checkpoint_meta.read_meta`).
    """
    import torch

    text = str(path)
    if re.match(r"^[a-z][a-z0-9+.-]*://|^hf[-_]hub:", text):
        raise UsageError(f"pretrained weights come from a local file only, got {text!r}: download it first")
    p = Path(text).expanduser()
    if not p.is_file():
        raise UsageError(f"pretrained weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            from lit_imgcls.io import load_tensors

            state = load_tensors(p, f"pretrained weights file {p}")
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot read weights from {p}: {str(exc).splitlines()[0]}") from exc
    meta = None
    if isinstance(state, dict) and "lit_imgcls" in state:  # ours: every field checked, as every command does
        from lit_imgcls.checkpoint_meta import read_meta

        meta = read_meta(state, f"{p} (--pretrained)", need_config=False)
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UsageError(f"{p} holds no state_dict (a mapping of names to tensors)")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        for pre in _PREFIXES:
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out, meta


def _classifier_keys(model: nn.Module) -> set[str]:
    """state_dict names of ``model``'s classifier layer (timm's ``get_classifier``); empty when it has none."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return set()
    ids = {id(t) for t in [*head.parameters(), *head.buffers()]}
    return {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in ids}


def load_pretrained(model: nn.Module, path: str | Path, class_names: list[str] | None = None,
                    network: str | None = None) -> LoadReport:
    """Copies every tensor of ``path`` whose name and shape match into ``model``; reports the rest.

    When ``path`` is a lit-imgcls checkpoint trained on other classes than ``class_names`` (renamed, reordered,
    other ones), its classifier is not copied even where the shapes match: output i would mean another class.
    A lit-imgcls checkpoint of another network than ``network`` (``model``'s name) is refused: a few tensors of
    the same name and shape (a classifier's bias) would load, and the run would start from next to nothing.

    Raises:
        UsageError: an unreadable file or malformed meta, a lit-imgcls checkpoint of another network, or no
            tensor that fits.
    """
    state, meta = read_weights(path)
    trained_on = meta.class_names if meta is not None else None
    if meta is not None and network is not None:
        from lit_imgcls.checkpoint_meta import check_network

        check_network(meta, network, None, f"{path} (--pretrained)",
                      f"--pretrained takes weights of the network being trained (a checkpoint of {network}, or timm "
                      "or plain weights)")
    own = model.state_dict()
    report = LoadReport(str(path))
    if class_names is not None and trained_on is not None and list(trained_on) != list(class_names):
        head = _classifier_keys(model)
        if not head and len(trained_on) == len(class_names):
            raise UsageError(f"{path} was trained on other classes than the data's, and network has no "
                             "classifier layer to leave out (get_classifier()): its outputs would mean other classes")
        # Only where the shapes fit: a classifier of another class count is skipped for its shape anyway.
        report.other_classes = sorted(k for k in head if k in state and state[k].shape == own[k].shape)
        state = {k: v for k, v in state.items() if k not in report.other_classes}
    usable = {}
    for k, v in state.items():
        if k not in own:
            report.unused.append(k)
        elif own[k].shape != v.shape:
            report.skipped.append(k)
        else:
            usable[k] = v
            report.loaded.append(k)
    report.new = [k for k in own if k not in usable]
    if not usable:
        raise UsageError(f"no tensor in {path} matches the network (first keys: {', '.join(list(state)[:5])})")
    from lit_imgcls.checkpoint_meta import check_finite

    check_finite(usable, f"pretrained {path}")
    model.load_state_dict(usable, strict=False)
    return report
