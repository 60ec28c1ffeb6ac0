"""What a checkpoint says about the model in it, read and checked in one place.

``fit`` stores, beside the weights, ``checkpoint["lit_imgcls"]``: the recipe, the class names in output order,
the input shape and the evaluation preprocessing (:class:`~lit_imgcls.data.preprocess.DataConfig`). ``predict``,
``score``, ``validate``/``test`` and fine-tuning read it through :func:`read_meta`, which checks every field before
anything is built from it: a checkpoint is data, and a malformed one is one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_imgcls.data.classes import MAX_CLASSES  # one bound on a class count, for every format
from lit_imgcls.data.preprocess import DataConfig
from lit_imgcls.errors import UsageError, quoted


@dataclass
class CheckpointMeta:
    """The model a checkpoint holds, as ``fit`` described it.

    Args:
        recipe: the recipe it was trained with (a dict of recipe keys).
        class_names: class names in the network's output order.
        data_config: how an image becomes its evaluation input.
        raw: the whole stored meta (version, pretrained report, ...).
    """

    recipe: dict[str, Any]
    class_names: list[str]
    data_config: DataConfig | None
    raw: dict[str, Any]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the network input."""
        if self.data_config is None:
            raise UsageError("this checkpoint has no data_config")
        return self.data_config.input_size

    @property
    def ema(self) -> bool:
        """Its weights are the EMA of the trained weights (``ema_decay`` on; see
        :mod:`lit_imgcls.training_options`)."""
        return self.raw.get("weights") == "ema"

    @property
    def temperature(self) -> float:
        """Temperature scaling's T, which ``score --calibrate`` stores in the calibrated checkpoint it writes: the
        class probabilities are softmax(logits / T) (:func:`lit_imgcls.evaluation.scaled_softmax`); 1.0 for a
        checkpoint that was not calibrated."""
        return float(self.raw.get("temperature", 1.0))


def read_meta(ckpt: Any, where: str | Path, need_config: bool = True) -> CheckpointMeta:
    """The checked meta of a loaded checkpoint ``ckpt`` (a dict); ``where`` names it in messages.

    Every field a command reads is checked here, before anything is built from it (a checkpoint is data, and may
    have been crafted): ``state_dict`` (names to tensors), ``recipe`` (each known key of the type the command line
    takes, by the same parser, and :func:`~lit_imgcls.recipe.check_scalars`), ``class_names`` (1 to
    :data:`MAX_CLASSES` strings), ``data_config`` (:meth:`DataConfig.from_dict`: channels, sides and pixels
    bounded, mean/std one finite number per channel, std > 0), the flat ``image_shape``/``mean``/``std`` copies
    (the same rules, and equal to ``data_config``'s), ``version``, ``pretrained``, the resume position, and a
    calibrated checkpoint's ``temperature`` (:func:`lit_imgcls.evaluation.temperature_problem`) and ``calibration``.

    Args:
        ckpt: the loaded checkpoint.
        where: its path, for messages.
        need_config: refuse a checkpoint without ``data_config`` (written before lit-imgcls 0.2), which cannot
            be predicted with; resuming and evaluating through a recipe's own data do not need it.

    Raises:
        UsageError: not written by ``lit-imgcls fit``, or a field that is missing or malformed (one line naming
            the field and what is valid).
    """
    if not isinstance(ckpt, dict):
        raise UsageError(f"checkpoint {where} holds a {type(ckpt).__name__}, not a checkpoint")
    meta = ckpt.get("lit_imgcls")
    if not isinstance(meta, dict) or "recipe" not in meta or "class_names" not in meta:
        raise UsageError(f"checkpoint {where} has no lit-imgcls meta (recipe, class names, preprocessing): it was "
                         "not written by `lit-imgcls fit`")
    _check_state_dict(ckpt.get("state_dict"), where)
    recipe = meta["recipe"]
    _check_recipe(recipe, where)
    names = meta["class_names"]
    if (not isinstance(names, list) or not 1 <= len(names) <= MAX_CLASSES
            or not all(isinstance(n, str) for n in names)):
        raise UsageError(f"checkpoint {where}: class_names must be a list of 1 to {MAX_CLASSES} strings, got "
                         f"{_kind(names)}")
    if not isinstance(meta.get("version", ""), str):
        raise UsageError(f"checkpoint {where}: version must be a string like '0.2.0', got {_kind(meta['version'])}")
    if meta.get("weights", "trained") not in ("trained", "ema"):  # which weights "state_dict" holds
        raise UsageError(f"checkpoint {where}: weights must be 'trained' or 'ema', got {_kind(meta['weights'])}")
    if not isinstance(meta.get("pretrained", {}), dict):  # the run's starting weights, kept for the record only
        raise UsageError(f"checkpoint {where}: pretrained must be a mapping (the starting weights' record), got "
                         f"{_kind(meta['pretrained'])}")
    from lit_imgcls.evaluation import temperature_problem

    if "temperature" in meta and (problem := temperature_problem(meta["temperature"])):  # score --calibrate's T
        raise UsageError(f"checkpoint {where}: temperature must be {problem}, got {_kind(meta['temperature'])}")
    if not isinstance(meta.get("calibration", {}), dict):  # how the temperature was fitted, kept for the record only
        raise UsageError(f"checkpoint {where}: calibration must be a mapping (the temperature fit's record), got "
                         f"{_kind(meta['calibration'])}")
    _check_position(ckpt.get(POSITION_KEY), where)
    config = DataConfig.from_dict(meta["data_config"], f"checkpoint {where}") if "data_config" in meta else None
    _check_flat_config(meta, config, where)
    if config is None and need_config:
        raise UsageError(f"checkpoint {where} has no data_config (its evaluation preprocessing): it was written by "
                         f"lit-imgcls {meta.get('version', 'before 0.2')}, which did not save it; train it again "
                         "with this version")
    return CheckpointMeta(recipe, list(names), config, meta)


# Where in its epoch a run stood (written by ImageClassifier.on_save_checkpoint; read when resuming).
POSITION_KEY = "lit_imgcls_position"


def _kind(value: Any) -> str:
    """A bad value for a message: its type and at most a short prefix of its text (a crafted value may be huge)."""
    return f"{quoted(value)} ({type(value).__name__})"


def _check_state_dict(state: Any, where: str | Path) -> None:
    import torch

    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {where}: state_dict must be a mapping of weight names to tensors, got "
                         f"{_kind(state)}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UsageError(f"checkpoint {where}: state_dict must map weight names (strings) to tensors; it holds "
                             f"{_kind(key)}: {type(value).__name__}")


def _check_recipe(recipe: Any, where: str | Path) -> None:
    """The saved recipe's known keys have the types the command line accepts (jsonargparse, through the CLI's
    own parser for the Recipe: one set of type rules), and pass :func:`~lit_imgcls.recipe.check_scalars`; keys
    this version does not know (a newer writer's) are left to :func:`recipe_from_meta`, which drops them."""
    from lit_imgcls.recipe import FIELDS, Recipe, check_scalars, parse_image_shape

    if not isinstance(recipe, dict):
        raise UsageError(f"checkpoint {where}: its recipe must be a mapping of recipe keys, got {_kind(recipe)}")
    bad = next((k for k in recipe if not isinstance(k, str)), None)
    if bad is not None:
        raise UsageError(f"checkpoint {where}: its recipe's keys must be strings, got {_kind(bad)}")
    known = {k: v for k, v in recipe.items() if k in FIELDS}
    from jsonargparse import ArgumentError

    try:
        _recipe_parser().parse_object(known)
    except ArgumentError as exc:
        import re
        import typing

        found = re.search(r'Parser key "([^"]+)"', str(exc))
        key = found.group(1) if found else None
        if key not in FIELDS:
            raise UsageError(f"checkpoint {where}: its recipe is not usable: {quoted(' '.join(str(exc).split()), 200)}") \
                from None
        hint = typing.get_type_hints(Recipe)[key]
        want = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("NoneType", "None")
        raise UsageError(f"checkpoint {where}: its recipe's {key} must be of type {want}, got "
                         f"{_kind(known[key])}") from None
    except Exception as exc:  # noqa: BLE001 - the parser fails on some values with bare errors (an int beyond any
        # float: OverflowError); whatever it is, the recipe is not one the command line would take
        raise UsageError(f"checkpoint {where}: its recipe is not usable ({type(exc).__name__}: "
                         f"{quoted(' '.join(str(exc).split()), 120)})") from None
    try:
        check_scalars(Recipe(**known))
        if known.get("image_shape"):
            parse_image_shape(known["image_shape"])
    except UsageError as exc:
        raise UsageError(f"checkpoint {where}: its recipe is not usable: {exc}") from None


_PARSER = None


def _recipe_parser():
    """The command line's parser of recipe keys (built once): the type rules a ``--recipe`` file gets."""
    global _PARSER
    if _PARSER is None:
        from lit_imgcls.cli import build_parser
        from lit_imgcls.recipe import Recipe

        def saved(recipe) -> None:
            """A checkpoint's saved recipe."""

        saved.__annotations__ = {"recipe": Recipe, "return": None}  # resolved here, not from this module's globals
        _PARSER = build_parser("checkpoint recipe", saved)
    return _PARSER


def _check_position(position: Any, where: str | Path) -> None:
    if position is None:
        return
    fields = ("epoch", "steps_into_epoch", "steps_per_epoch")
    if not isinstance(position, dict) or not all(
            position.get(k) is None or (isinstance(position[k], int) and not isinstance(position[k], bool)
                                        and 0 <= position[k] < 2**63) for k in fields):
        raise UsageError(f"checkpoint {where}: {POSITION_KEY} must be a mapping of {', '.join(fields)} to "
                         f"non-negative integers, got {_kind(position)}")


def _check_flat_config(meta: dict, config: DataConfig | None, where: str | Path) -> None:
    """The flat ``image_shape``, ``mean`` and ``std`` that ``fit`` writes beside ``data_config`` (older readers
    use them): by :class:`DataConfig`'s rules, and equal to ``config``'s when there is one."""
    flat = {k: meta[k] for k in ("image_shape", "mean", "std") if k in meta}
    if not flat:
        return
    if config is None:
        if "image_shape" not in flat:
            raise UsageError(f"checkpoint {where}: mean and std without image_shape; image_shape must be [C, H, W]")
        DataConfig.from_dict({"input_size": flat["image_shape"], **{k: v for k, v in flat.items() if k != "image_shape"}},
                             f"checkpoint {where}", name="image_shape, mean and std")
        return
    want = {"image_shape": list(config.input_size), "mean": list(config.mean), "std": list(config.std)}
    for key, value in flat.items():
        if (list(value) if isinstance(value, (list, tuple)) else value) != want[key]:
            raise UsageError(f"checkpoint {where}: {key} must equal data_config's {want[key]}, got {_kind(value)}")


# What a checkpoint may not decide: where to write (outputs, caches, a dataset's download folder), what to fetch
# from the network, which code or weights to load. A checkpoint is data; these come from the user's command line or
# recipe file.
NOT_FROM_CHECKPOINT = ("data_url", "data_cache", "model_prefix", "run_dir", "pretrained", "callbacks")


def recipe_from_meta(meta: CheckpointMeta, notes: dict[str, str] | None = None):
    """The Recipe a checkpoint was trained with, less what a checkpoint may not decide: the keys of
    :data:`NOT_FROM_CHECKPOINT`, any value naming a network location (``s3://``, ``http://``), and ``data_dir``
    where the dataset downloads into it. Local data folders to read (``data_train``, ``data_val``, a pack's
    ``data_dir``) are kept. Keys this version does not know (a newer writer) are dropped too.

    Args:
        meta: the checkpoint's meta.
        notes: receives, for each key set in the checkpoint that was not taken, a sentence saying so.

    Raises:
        UsageError: a saved key whose value this version's Recipe refuses.
    """
    import dataclasses

    from lit_imgcls.recipe import Recipe, dataset_keys

    known = {f.name for f in dataclasses.fields(Recipe)}
    saved = {k: v for k, v in meta.recipe.items() if k in known}
    dropped = [k for k in NOT_FROM_CHECKPOINT if saved.get(k)]
    dropped += [k for k, v in saved.items() if isinstance(v, str) and "://" in v and k not in dropped]
    if saved.get("data_dir") and "data_dir" not in dropped:
        try:
            from lit_imgcls.registry import datasets

            downloads = "data_url" in (dataset_keys(datasets.get(str(saved.get("dataset", "mnist")))) or ())
        except Exception:  # noqa: BLE001 - an unknown dataset fails later with its own line
            downloads = True
        if downloads:
            dropped.append("data_dir")
    for key in dropped:
        if notes is not None and key.startswith("data_"):  # the others never steer what score or predict read
            flag = "--" + key.replace("_", "-")
            notes[key] = (f"the checkpoint's {key} {saved[key]!r} is not used (a checkpoint does not choose where to "
                          f"read from the network or write to); give {flag} to use it")
        del saved[key]
    try:
        return Recipe(**saved)
    except TypeError as exc:
        raise UsageError(f"the checkpoint's recipe is not usable: {exc}") from None


def trained_network(meta: CheckpointMeta) -> str | None:
    """The network a checkpoint was trained with, as the registry names it (``resnet`` + 50 = ``resnet50``,
    ``inception-bn`` = ``inception_bn``); None when its recipe does not say."""
    return network_key(meta.recipe.get("network"), meta.recipe.get("num_layers"))


def network_key(network: str | None, num_layers: int | None = None) -> str | None:
    """``network`` and ``num_layers`` as one comparable registry name (see :func:`trained_network`)."""
    if not network:
        return None
    from lit_imgcls.networks.factory import resolve_name
    from lit_imgcls.registry import _normalize_network

    return _normalize_network(resolve_name(network, num_layers))


def check_network(meta: CheckpointMeta, network: str | None, num_layers: int | None, where: str | Path,
                  hint: str) -> None:
    """Refuses a checkpoint trained with another network than the one this run builds (``network`` and
    ``num_layers``, as a recipe gives them): one line naming both, and ``hint``: what to do instead, in the
    calling command's own flags (``{had}``: the checkpoint's network, ``{want}``: this run's, are filled in).

    Raises:
        UsageError: the checkpoint's recipe names another network.
    """
    had, want = trained_network(meta), network_key(network, num_layers)
    if had is not None and want is not None and had != want:
        raise UsageError(f"checkpoint {where} holds weights of network {had}, not of {want} (this run's network); "
                         f"{hint.format(had=had, want=want) or f'use a checkpoint of {want}'}")


def load_module(checkpoint: str | Path, ckpt: dict | None = None, network: str | None = None,
                num_layers: int | None = None, network_hint: str = ""):
    """The trained ImageClassifier of a checkpoint (eval mode, CPU) and its :class:`CheckpointMeta`.

    The network is first built on torch's ``meta`` device (shapes, no memory) and the checkpoint's tensors are
    checked against it: only a checkpoint whose tensors fit gets a real network built, so what a crafted
    checkpoint's meta says (a huge input size, say) cannot make this allocate more than the file itself holds.

    Args:
        checkpoint: a ``PREFIX-NNNN.ckpt`` written by ``fit``.
        ckpt: the checkpoint already read (saves reading it twice).
        network, num_layers: the network the user asked for (``score --network``); another network than the
            checkpoint's is refused. None: the checkpoint's.
        network_hint: what to do about another network, in the caller's flags (see :func:`check_network`).

    Raises:
        UsageError: unreadable, malformed, another network than ``network``, or weights that do not fit the
            network the checkpoint names.
    """
    import torch

    from lit_imgcls.engine import DataSpec, build_module
    from lit_imgcls.io import load_checkpoint

    ckpt = ckpt if ckpt is not None else load_checkpoint(checkpoint)
    meta = read_meta(ckpt, checkpoint)
    if network is not None:
        check_network(meta, network, num_layers, checkpoint, network_hint)
    recipe = recipe_from_meta(meta)
    recipe.pretrained = None  # the checkpoint's weights replace any starting weights
    recipe.image_shape = ",".join(map(str, meta.image_shape))
    spec = DataSpec(meta.class_names, meta.data_config)
    with torch.device("meta"):
        shapes = build_module(recipe, spec).state_dict()
    check_weights(shapes, ckpt["state_dict"], checkpoint, recipe.network)
    module = build_module(recipe, spec)
    load_weights(module, ckpt["state_dict"], checkpoint, recipe.network)
    module.meta = dict(meta.raw)
    import dataclasses

    # A calibrated checkpoint's probabilities are its temperature's (ImageClassifier.class_probs).
    module.evaluation = dataclasses.replace(module.evaluation, temperature=meta.temperature)
    return module.eval(), meta


def check_finite(state_dict: dict, where: str) -> None:
    """Refuses weights holding NaN or infinity: a diverged run's, which would predict ``nan`` for every input.

    Raises:
        UsageError: naming how many tensors are not finite and the first of them.
    """
    import torch

    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UsageError(f"{where} holds weights that are not finite numbers (NaN or infinity in {len(bad)} of "
                         f"{len(state_dict)} tensors, first {bad[0]}): the run that wrote it diverged; use a checkpoint "
                         "saved before that, or train again with `lit-imgcls fit` and a lower --lr")


def check_weights(own: dict, state_dict: dict, checkpoint: str | Path, network: str,
                  trained_with: str | None = None, hint: str = "") -> None:
    """Refuses ``state_dict`` unless it holds exactly the tensors of ``own`` (a network's state_dict, real or on
    the ``meta`` device), shape for shape.

    Args:
        trained_with: the network the checkpoint's recipe names, for the message.
        hint: what to do about another network, in the caller's flags (see :func:`check_network`).

    Raises:
        UsageError: missing, unexpected or differently shaped tensors, naming a few and both networks.
    """
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and getattr(state_dict[k], "shape", None) != own[k].shape]
    if missing or extra or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", extra), ("with other shapes", shapes)):
            if keys:
                parts.append(f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        other = network_key(trained_with)
        if other and other != network_key(network):
            fix = hint.format(had=other, want=network) or f"use a checkpoint of {network}"
            raise UsageError(f"checkpoint {checkpoint} holds weights of network {other}, not of {network} (this run's "
                             f"network): {'; '.join(parts)}; {fix}")
        raise UsageError(f"checkpoint {checkpoint} does not hold weights of network {network} as built here: "
                         f"{'; '.join(parts)}; was it trained with another network or class count?")


def load_weights(module, state_dict: dict, checkpoint: str | Path, network: str,
                 trained_with: str | None = None, hint: str = "") -> None:
    """Loads ``state_dict`` into ``module``; weights of another network, or weights that are not finite, are one
    line naming what is wrong (and both networks, given ``trained_with``: the checkpoint's recipe's network).

    Raises:
        UsageError: missing, unexpected or differently shaped tensors; NaN or infinite values.
    """
    check_weights(module.state_dict(), state_dict, checkpoint, network, trained_with, hint)
    check_finite(state_dict, f"checkpoint {checkpoint}")
    module.load_state_dict(state_dict)
