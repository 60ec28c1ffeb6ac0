"""Resuming with a changed recipe: what changed, what a resumed run honours, and what it refuses.

A resumed run trains with the *new* recipe: its LR schedule is rebuilt from the new keys and advanced to the point
reached (MXNet's ``--load-epoch`` semantics; see :meth:`lit_imgcls.module.ImageClassifier._continue_schedule`), and
its optimizer settings replace the saved ones. Every changed key is printed before training starts. Some changes
cannot be honoured and are refused with one line:

- at any resume: ``network``, ``num_layers`` (the weights are another network's), ``optimizer`` (the saved
  optimizer state is another optimizer's), ``freeze_backbone`` and ``backbone_lr_mult`` to or from 1 (the optimizer
  holds other parameter groups);
- inside an unfinished epoch (a step or stop checkpoint): the keys that decide the epoch's batches, because the run
  continues that epoch's data order at the batch it reached: ``batch_size``, ``accumulate_grad_batches``, ``fused_steps``, ``num_examples``,
  ``seed``, ``dataset``, ``data_dir``, ``data_url``, ``data_train``, ``sampler``, and the number of devices (``gpus``,
  ``num_processes``). Resume from an epoch checkpoint (``--load-epoch N``) to change them.

The loss's class weights are compared as values too (the checkpoint's meta holds them): a ``class_weights`` file
whose weights changed under the same name is reported as a change.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from lit_imgcls.errors import UsageError

# What a training command's user does about a checkpoint of another network ({had}: its network, {want}: the run's).
OTHER_NETWORK_HINT = "give --network {had} to use it, or a checkpoint of {want}"

# How to resume, not what to train: these differ between the first run and its resumption by design.
NOT_COMPARED = ("load_epoch", "resume")

REFUSED = {
    "network": "the checkpoint holds another network's weights",
    "num_layers": "the checkpoint holds another network's weights",
    "optimizer": "the checkpoint's optimizer state belongs to the other optimizer",
    "freeze_backbone": "the optimizer would hold other parameters than the checkpoint's",
}

MID_EPOCH_FIXED = ("batch_size", "accumulate_grad_batches", "fused_steps", "num_examples", "seed", "dataset", "data_dir", "data_url", "data_train", "sampler")


def _devices(recipe: dict[str, Any]) -> int:
    ids = [v for v in str(recipe.get("gpus") or "").split(",") if v.strip()]
    return len(ids) or int(recipe.get("num_processes") or 1)


def recipe_changes(saved: dict[str, Any], recipe: Any, checkpoint: str, mid_epoch: bool) -> list[tuple[str, Any, Any]]:
    """The keys whose value differs between the checkpoint's recipe and ``recipe``, as (key, old, new).

    Args:
        saved: the recipe stored in the checkpoint (a dict; keys it lacks, from older versions, are not compared).
        recipe: the new run's :class:`~lit_imgcls.recipe.Recipe`.
        checkpoint: the checkpoint's path, for messages.
        mid_epoch: the checkpoint was saved inside an epoch (a step or stop checkpoint).

    Raises:
        UsageError: a change a resumed run cannot honour (see the module's docstring), naming the key, both values
            and what to do instead.
    """
    new = dataclasses.asdict(recipe)
    changes = [(k, saved[k], v) for k, v in new.items() if k not in NOT_COMPARED and k in saved and saved[k] != v]
    for key, old, value in changes:
        if key in REFUSED:
            raise UsageError(f"cannot resume from {checkpoint} with {key} {value!r}: it was trained with {key} "
                             f"{old!r} and {REFUSED[key]}; keep {key} {old!r}, or start a new run (--pretrained "
                             f"{checkpoint} starts one from its weights)")
    changed = {k for k, _, _ in changes}
    if "backbone_lr_mult" in changed and (saved["backbone_lr_mult"] == 1) != (recipe.backbone_lr_mult == 1):
        raise UsageError(f"cannot resume from {checkpoint} with backbone_lr_mult {recipe.backbone_lr_mult}: it was "
                         f"trained with {saved['backbone_lr_mult']}, and changing it to or from 1 changes the "
                         "optimizer's parameter groups; any other value than 1 may replace another")
    if mid_epoch:
        fixed = [k for k in MID_EPOCH_FIXED if k in changed]
        if ("gpus" in changed or "num_processes" in changed) and _devices(saved) != _devices(new):
            fixed.append("gpus" if "gpus" in changed else "num_processes")
        if fixed:
            listed = ", ".join(f"{k} {saved[k]!r} -> {new[k]!r}" for k in fixed)
            raise UsageError(f"cannot resume inside an epoch from {checkpoint} with {listed}: the run continues that "
                             "epoch's batches where it stopped, which these keys decide; keep them, or resume from "
                             "an epoch checkpoint (--load-epoch N) to change them")
    return changes


def _weights(entry: Any) -> list[float] | None:
    """The loss's weights per class from a checkpoint meta's ``class_weights`` entry (None: unweighted), rounded
    to 6 significant digits for comparing and printing."""
    weights = entry.get("weights") if isinstance(entry, dict) else None
    if not isinstance(weights, list):
        return None
    return [float(f"{float(w):.6g}") for w in weights]


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """``lr 0.05 -> 0.001, num_epochs 2 -> 4``."""
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)


def check_resumable(ckpt: str, module, datamodule, recipe: Any, where: str, report: bool) -> None:
    """A checkpoint to resume from holds this network's finite weights, trained on these classes, with a recipe
    whose changes the resumed run can honour (else one line); the changed keys are printed (``report``).
    ``where`` names the run's data in messages.

    Raises:
        UsageError: other classes or weights, or a change :mod:`lit_imgcls.resume_changes` refuses.
    """
    from lit_imgcls.checkpoint_meta import load_weights, read_meta
    from lit_imgcls.checkpoints import epoch_of
    from lit_imgcls.data.classes import check_same_classes
    from lit_imgcls.io import load_checkpoint
    from lit_imgcls.module import POSITION_KEY

    state = load_checkpoint(ckpt)
    meta = read_meta(state, ckpt, need_config=False)
    position = state.get(POSITION_KEY)
    if isinstance(position, dict) and position.get("steps_per_epoch"):
        mid_epoch = int(position.get("steps_into_epoch", 0)) < int(position["steps_per_epoch"])
    else:  # written before lit-imgcls 0.2.1: only epoch checkpoints are known to end an epoch
        mid_epoch = epoch_of(ckpt, recipe.model_prefix) is None
    changes = recipe_changes(meta.recipe, recipe, ckpt, mid_epoch)
    saved = state.get("lit_imgcls")
    had = _weights(saved.get("class_weights") if isinstance(saved, dict) else None)
    have = _weights(getattr(module, "meta", {}).get("class_weights"))
    if had != have and not any(key == "class_weights" for key, _, _ in changes):
        changes.append(("class_weights", had, have))  # the same source, other values (an edited file)
    check_same_classes(datamodule.class_names, meta.class_names, where, f"checkpoint {ckpt}")
    # Lightning loads them again; this names a misfit in one line
    load_weights(module, state["state_dict"], ckpt, recipe.network, meta.recipe.get("network"), OTHER_NETWORK_HINT)
    if changes and report:
        from lit_imgcls.printable import printable

        print(printable(f"lit-imgcls: resuming with a changed recipe: {describe(changes)}; the LR schedule and "
                        "optimizer settings are the new recipe's, continued from the point reached"),
              file=sys.stderr, flush=True)
