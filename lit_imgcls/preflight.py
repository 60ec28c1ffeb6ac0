"""Checks before a run starts: its output folders exist and take writes, and the disk holds its checkpoints.

A full or read-only disk found after an hour of training costs the hour; found here it costs a second and says
what to change. The checkpoint size is estimated from the network's tensors and the optimizer's state per
parameter, which is what a checkpoint holds (plus a little metadata).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from lit_imgcls.errors import UsageError

# Optimizer state tensors kept per trained parameter: SGD's momentum buffer, AdamW's two moments.
_STATE_PER_PARAM = {"sgd": 1, "adamw": 2}
_METADATA = 128 << 10  # the recipe, class names, loop state: a few kilobytes


def checkpoint_bytes(module, optimizer: str, momentum: float = 0.9) -> int:
    """About how many bytes one checkpoint of ``module`` takes with ``optimizer``'s state."""
    tensors = sum(t.numel() * t.element_size() for t in module.state_dict().values() if hasattr(t, "numel"))
    trained = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    per_param = _STATE_PER_PARAM.get(optimizer, 2) if (optimizer != "sgd" or momentum) else 0
    return tensors + per_param * trained + _METADATA


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def writable_folder(folder: str, what: str) -> None:
    """Creates ``folder`` if needed and proves a file can be made in it; else one clear line."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lit-imgcls-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what} folder {folder} is not writable: {exc.strerror or exc}; choose another with --{what.replace(' ', '-')}") from None


def check_outputs(recipe, module, *, report: bool = True) -> None:
    """Refuses a run whose outputs cannot be written; warns when the disk will not hold all its checkpoints.

    Args:
        recipe: the run's recipe (model_prefix, run_dir, epochs, save_period, save_every_steps).
        module: the ImageClassifier, for the checkpoint size.
        report: print the warning (rank 0 only, so a multi-worker run says it once).
    """
    writable_folder(recipe.run_dir, "run dir")
    if not recipe.model_prefix:
        return
    from lit_imgcls.storage import is_url

    if is_url(recipe.model_prefix):
        return  # written to already (its marker, lit_imgcls.remote_prefix); an object store has no free space to ask
    folder = os.path.dirname(os.path.abspath(recipe.model_prefix))
    writable_folder(folder, "model prefix")
    one = checkpoint_bytes(module, recipe.optimizer, recipe.mom)
    free = shutil.disk_usage(folder).free
    # A checkpoint is written beside the previous ones before any old one is removed.
    if free < 2 * one:
        raise UsageError(
            f"{folder} has {_mb(free)} free, but one checkpoint of this run takes about {_mb(one)} and saving needs "
            f"room for two ({_mb(2 * one)}); free space or choose another --model-prefix"
        )
    epochs = -(-recipe.num_epochs // recipe.save_period)
    planned = one * (epochs + (3 if recipe.save_every_steps else 0) + 1)  # epochs, step saves, a stop checkpoint
    if free < planned and report:
        print(f"lit-imgcls: warning: {folder} has {_mb(free)} free; this run's {epochs} epoch checkpoints and "
              f"others take about {_mb(planned)}: it will stop with an error when the disk is full "
              "(raise save_period or free space)", file=sys.stderr, flush=True)
