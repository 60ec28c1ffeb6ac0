"""Saving a checkpoint from a callback: a full or read-only disk, or storage at a URL that still fails after its
client's retries, ends the run with one line, nothing overwritten."""

from __future__ import annotations

import lightning as L

from lit_imgcls.errors import DISK_ERRORS, RemoteUnavailable, RunFailed


def disk_failure(what: str, exc: OSError) -> RunFailed:
    """The run-ending error for an output that could not be written: what, why, and what is still intact."""
    reason = exc.strerror or str(exc)
    return RunFailed(
        f"cannot write {what}: {reason}; nothing was written in its place and the checkpoints saved before are "
        "intact; free space (or fix the folder's permissions), then rerun the same command with --resume auto"
    )


def check_weights(trainer: L.Trainer) -> None:
    """Refuses to let weights holding NaN or infinity be saved (over good checkpoints, or as the newest).

    The loss is checked before every update, so this fires only when a finite loss gave a non-finite update.

    Raises:
        NonFiniteLoss: naming the first such weight.
    """
    import torch

    from lit_imgcls.errors import NonFiniteLoss

    for name, tensor in trainer.lightning_module.named_parameters():
        if not bool(torch.isfinite(tensor.detach()).all()):
            groups = trainer.optimizers[0].param_groups if trainer.optimizers else [{"lr": float("nan")}]
            raise NonFiniteLoss(trainer.global_step, trainer.current_epoch, float(groups[0]["lr"]), float("nan"),
                                tensor=name)


def save_or_fail(trainer: L.Trainer, path: str) -> None:
    """``trainer.save_checkpoint(path)`` of finite weights; a disk error becomes :class:`RunFailed` naming the file.

    Raises:
        NonFiniteLoss: the weights hold NaN or infinity (nothing is written).
        RunFailed: the disk is full, read-only or failing.
        RemoteUnavailable: the storage of a URL prefix still fails after its client's retries.
    """
    check_weights(trainer)
    try:
        trainer.save_checkpoint(path, weights_only=False)
    except RemoteUnavailable as exc:
        raise RemoteUnavailable(f"{exc}; checkpoint {path} was not written (an object is whole or absent) and the "
                                "checkpoints saved before are intact; rerun the same command with --resume auto once "
                                "the storage answers") from exc
    except OSError as exc:
        if exc.errno in DISK_ERRORS:
            raise disk_failure(f"checkpoint {path}", exc) from exc
        raise
