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

from lit_imgcls.data.preprocess import DataConfig
from lit_imgcls.errors import UsageError

MAX_CLASSES = 1_000_000


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


def read_meta(ckpt: Any, where: str | Path, need_config: bool = True) -> CheckpointMeta:
    """The checked meta of a loaded checkpoint ``ckpt`` (a dict); ``where`` names it in messages.

    Args:
        ckpt: the loaded checkpoint.
        where: its path, for messages.
        need_config: refuse a checkpoint without ``data_config`` (written before lit-imgcls 0.2), which cannot
            be predicted with; resuming and evaluating through a recipe's own data do not need it.

    Raises:
        UsageError: not written by ``lit-imgcls fit``, or a field that is missing or malformed.
    """
    if not isinstance(ckpt, dict):
        raise UsageError(f"checkpoint {where} holds a {type(ckpt).__name__}, not a checkpoint")
    meta = ckpt.get("lit_imgcls")
    if not isinstance(meta, dict) or "recipe" not in meta or "class_names" not in meta:
        raise UsageError(f"checkpoint {where} has no lit-imgcls meta (recipe, class names, preprocessing): it was "
                         "not written by `lit-imgcls fit`")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise UsageError(f"checkpoint {where}: state_dict is not a mapping of weights")
    recipe = meta["recipe"]
    if not isinstance(recipe, dict):
        raise UsageError(f"checkpoint {where}: its recipe is a {type(recipe).__name__}, not a mapping")
    names = meta["class_names"]
    if (not isinstance(names, list) or not 1 <= len(names) <= MAX_CLASSES
            or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names)):
        raise UsageError(f"checkpoint {where}: class_names is not a list of 1 to {MAX_CLASSES} names")
    names = [str(n) for n in names]
    if "data_config" not in meta:
        if not need_config:
            return CheckpointMeta(recipe, names, None, meta)
        raise UsageError(f"checkpoint {where} has no data_config (its evaluation preprocessing): it was written by "
                         f"lit-imgcls {meta.get('version', 'before 0.2')}, which did not save it; train it again "
                         "with this version")
    config = DataConfig.from_dict(meta["data_config"], f"checkpoint {where}")
    return CheckpointMeta(recipe, names, config, meta)


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


def load_module(checkpoint: str | Path, ckpt: dict | None = None):
    """The trained ImageClassifier of a checkpoint (eval mode, CPU) and its :class:`CheckpointMeta`.

    Args:
        checkpoint: a ``PREFIX-NNNN.ckpt`` written by ``fit``.
        ckpt: the checkpoint already read (saves reading it twice).

    Raises:
        UsageError: unreadable, malformed, or weights that do not fit the network the checkpoint names.
    """
    from lit_imgcls.engine import DataSpec, build_module
    from lit_imgcls.io import load_checkpoint

    ckpt = ckpt if ckpt is not None else load_checkpoint(checkpoint)
    meta = read_meta(ckpt, checkpoint)
    recipe = recipe_from_meta(meta)
    recipe.pretrained = None  # the checkpoint's weights replace any starting weights
    recipe.image_shape = ",".join(map(str, meta.image_shape))
    module = build_module(recipe, DataSpec(meta.class_names, meta.data_config))
    load_weights(module, ckpt["state_dict"], checkpoint, recipe.network)
    module.meta = dict(meta.raw)
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


def load_weights(module, state_dict: dict, checkpoint: str | Path, network: str) -> None:
    """Loads ``state_dict`` into ``module``; weights of another network, or weights that are not finite, are one
    line naming what is wrong.

    Raises:
        UsageError: missing, unexpected or differently shaped tensors; NaN or infinite values.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and getattr(state_dict[k], "shape", None) != own[k].shape]
    if missing or extra or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", extra), ("with other shapes", shapes)):
            if keys:
                parts.append(f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise UsageError(f"checkpoint {checkpoint} does not hold weights of network {network} as built here: "
                         f"{'; '.join(parts)}; was it trained with another network or class count?")
    check_finite(state_dict, f"checkpoint {checkpoint}")
    module.load_state_dict(state_dict)
