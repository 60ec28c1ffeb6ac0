"""Checkpoint names and discovery: the one home of the rules for what a run writes under ``--model-prefix``.

A run with prefix ``P`` writes (MXNet's ``--model-prefix`` scheme, plus two kinds of its own)::

    P-0003.ckpt              the end of epoch 3 (``epoch_path``); ``--load-epoch 3`` resumes from it
    P-step-00001200.ckpt     every ``save_every_steps`` optimizer steps of an epoch, named by the global step
                             (``step_path``); the newest two are kept
    P-stop.ckpt              where SIGTERM or Ctrl-C stopped the run (``stop_path``)
    P-recipe.yaml            the resolved recipe (``recipe_path``)
    .P.lock                  held by the run writing under P, for its whole length (``lock_path``; removed
                             when it ends): a second run with the same prefix at once is refused

each checkpoint with a ``.sha256`` beside it (:mod:`lit_imgcls.io`). ``--resume auto`` takes the newest *written*
readable one of the three kinds (:func:`newest_readable`).

``score --calibrate`` writes ``P-0003-calibrated.ckpt`` beside ``P-0003.ckpt`` (:func:`calibrated_path`): the
weights with a temperature in their meta, no training state. Every name above ends in ``-NNNN.ckpt``,
``-step-N.ckpt`` or ``-stop.ckpt`` and one of those is never ``-calibrated.ckpt``, so ``--load-epoch``,
``--resume auto``, ``--overwrite`` and the newest-checkpoint scans never take a calibrated file for a run's own.

``P`` may be a URL (``s3://bucket/model/mnist``, :mod:`lit_imgcls.storage`): the same names, as objects. Its
lock is a local one keyed by the URL, and an ownership marker object ``.P.lit-imgcls.json`` beside the
checkpoints says lit-imgcls wrote them (:mod:`lit_imgcls.remote_prefix`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from collections.abc import Iterator

from lit_imgcls.errors import UsageError
from lit_imgcls.printable import warn
from lit_imgcls.storage import basename, is_url, split


def epoch_path(prefix: str, epoch: int) -> str:
    """``P-0003.ckpt``: the checkpoint at the end of ``epoch`` (1-based, as MXNet numbers them)."""
    return f"{prefix}-{epoch:04d}.ckpt"


def step_path(prefix: str, step: int) -> str:
    """``P-step-00001200.ckpt``: the checkpoint after ``step`` optimizer steps."""
    return f"{prefix}-step-{step:08d}.ckpt"


def stop_path(prefix: str) -> str:
    """``P-stop.ckpt``: the checkpoint a stopped run leaves (without a prefix: ``stop.ckpt`` in the run folder)."""
    return f"{prefix}-stop.ckpt"


CALIBRATED_SUFFIX = "-calibrated.ckpt"


def calibrated_path(checkpoint: str) -> str:
    """``P-0003-calibrated.ckpt`` for ``P-0003.ckpt`` (any ``NAME.ckpt``, or ``NAME``, gives
    ``NAME-calibrated.ckpt``); a name already ending in ``-calibrated.ckpt`` is its own (a caller refuses to write
    over the file it reads)."""
    if is_calibrated_name(checkpoint):
        return checkpoint
    return (checkpoint[: -len(".ckpt")] if checkpoint.endswith(".ckpt") else checkpoint) + CALIBRATED_SUFFIX


def is_calibrated_name(path: str) -> bool:
    """The name ``score --calibrate`` gives what it writes (``...-calibrated.ckpt``), which no run's own checkpoint
    name matches."""
    return basename(str(path)).endswith(CALIBRATED_SUFFIX) and len(basename(str(path))) > len(CALIBRATED_SUFFIX)


def recipe_path(prefix: str) -> str:
    """``P-recipe.yaml``: the resolved recipe of the run writing under ``prefix``."""
    return f"{prefix}-recipe.yaml"


def lock_path(prefix: str) -> str:
    """``DIR/.NAME.lock`` for the prefix ``DIR/NAME``: the :class:`~lit_imgcls.locks.ProcessLock` of the one run
    that writes checkpoints under that prefix (hidden, and no checkpoint pattern matches it). For a URL, a
    local file keyed by it (:func:`lit_imgcls.remote_prefix.lock_path`)."""
    if is_url(prefix):
        from lit_imgcls.remote_prefix import lock_path as local_lock

        return local_lock(prefix)
    folder, name = os.path.split(prefix)
    return os.path.join(folder, f".{name}.lock")


def marker_path(prefix: str) -> str:
    """``DIR/.NAME.lit-imgcls.json``: beside the checkpoints of a prefix at a URL, the ownership marker
    (:mod:`lit_imgcls.remote_prefix`); no checkpoint pattern matches it."""
    folder, name = split(prefix)
    return f"{folder}/.{name}.lit-imgcls.json"


def our_names(prefix: str, names) -> list[str]:
    """Of ``names`` (files or objects beside ``prefix``), the ones lit-imgcls writes: its checkpoints, their
    ``.sha256`` and the recipe."""
    base = re.escape(basename(prefix))
    pattern = re.compile(base + r"-(\d{4,}|step-\d+|stop)\.ckpt(\.sha256)?|" + base + r"-recipe\.yaml")
    return [n for n in names if pattern.fullmatch(basename(n))]


@contextlib.contextmanager
def prefix_held(prefix: str | None) -> Iterator[None]:
    """Within: this process is the only lit-imgcls run writing under ``prefix`` (nothing is locked for None: a
    run without checkpoints, or a worker of a run whose rank 0 holds it). Released, its file removed, however the
    block ends; a killed holder's lock is free at once (the kernel drops it with the process).

    Raises:
        UsageError: another process holds the prefix (named by its pid), or its folder cannot take the lock file.
    """
    if not prefix:
        yield
        return
    if is_url(prefix):
        from lit_imgcls.remote_prefix import holding_remote

        with holding_remote(prefix):
            yield
        return
    from lit_imgcls.locks import holding
    from lit_imgcls.preflight import writable_folder

    writable_folder(os.path.dirname(os.path.abspath(prefix)), "model prefix")
    with holding(lock_path(prefix),
                 busy=lambda pid: (f"another lit-imgcls run (process {pid}) is writing checkpoints under model_prefix "
                                   f"{prefix} now: wait for it to end, or choose another --model-prefix"),
                 unwritable=lambda why: f"cannot lock model_prefix {prefix} ({lock_path(prefix)}): {why}"):
        yield


def _written(prefix: str) -> dict[str, int]:
    """Files (objects, for a URL) ``P-*`` beside the prefix: path -> time written (ns; whole seconds on most
    object stores). One listing of the folder."""
    if is_url(prefix):
        from lit_imgcls.storage import listing

        return {p: t for p, t in listing(prefix).items() if basename(p).startswith(basename(prefix) + "-")}
    found = {}
    for path in glob.glob(glob.escape(prefix) + "-*"):
        try:
            found[path] = os.stat(path).st_mtime_ns
        except FileNotFoundError:  # removed meanwhile (another run's rotation), or a dangling link
            pass
    return found


def step_checkpoints(prefix: str, written: dict[str, int] | None = None) -> list[str]:
    """``P-step-*.ckpt`` files, oldest written first (a rerun from scratch may leave higher step numbers; at equal
    times, the lower step first)."""
    written = _written(prefix) if written is None else written
    pattern = re.compile(re.escape(basename(prefix)) + r"-step-(\d+)\.ckpt")
    found = [p for p in written if pattern.fullmatch(basename(p))]
    return sorted(found, key=lambda p: (written[p], basename(p)))


def existing_epochs(prefix: str, written: dict[str, int] | None = None) -> list[int]:
    """The epoch numbers of ``P-NNNN.ckpt`` files, ascending."""
    pattern = re.compile(re.escape(basename(prefix)) + r"-(\d{4,})\.ckpt")
    found = []
    for path in (_written(prefix) if written is None else written):
        m = pattern.fullmatch(basename(path))
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def saved_checkpoints(prefix: str) -> list[str]:
    """Every checkpoint a run with this prefix may resume from (epoch, step and stop), newest written first.

    Written, not numbered: a rerun from scratch overwrites low epoch numbers and may leave higher step numbers
    of the run before. At equal times an epoch checkpoint wins over a stop or step one of the same moment.
    """
    rank = {"epoch": 2, "stop": 1, "step": 0}
    written = _written(prefix)
    found = [(epoch_path(prefix, e), "epoch") for e in existing_epochs(prefix, written)]
    found += [(p, "step") for p in step_checkpoints(prefix, written)]
    found += [(stop_path(prefix), "stop")] if stop_path(prefix) in written else []
    # Object stores date in whole seconds: within one, the kind, then the higher number in the name.
    dated = [(written[path], rank[kind], basename(path), path) for path, kind in found if path in written]
    return [path for *_, path in sorted(dated, reverse=True)]


def newest_readable(prefix: str, network: str | None = None, num_layers: int | None = None) -> str | None:
    """The newest checkpoint that loads, matches its checksum, has well-formed meta
    (:func:`~lit_imgcls.checkpoint_meta.read_meta`), holds finite weights and, given ``network``, was trained
    with that network; each newer one skipped is named on stderr with the reason, one warning line each."""
    from lit_imgcls.checkpoint_meta import check_finite, check_network, read_meta
    from lit_imgcls.io import load_checkpoint

    for path in saved_checkpoints(prefix):
        try:
            state = load_checkpoint(path)
            meta = read_meta(state, path, need_config=False)
            if network is not None:
                check_network(meta, network, num_layers, path, "a resumed run keeps its network")
            check_finite(state["state_dict"], f"checkpoint {path}")
            return path
        except UsageError as exc:
            warn(f"{' '.join(str(exc).split())}; skipping it, trying the one before")
    return None


def epoch_of(path: str, prefix: str | None) -> int | None:
    """The epoch number in an epoch checkpoint's name (``PREFIX-0003.ckpt`` -> 3); None for step/stop ones."""
    name = re.escape(basename(prefix)) if prefix else r".*(?<!-step)"
    m = re.fullmatch(name + r"-(\d{4,})\.ckpt", basename(path))
    return int(m.group(1)) if m else None


def resume_path(recipe) -> str | None:
    """The checkpoint ``--load-epoch`` names (checked to exist and to be readable), or ``--resume auto`` finds."""
    if recipe.resume == "auto":
        found = newest_readable(recipe.model_prefix or "", recipe.network, recipe.num_layers)
        skipped = saved_checkpoints(recipe.model_prefix or "") if found is None else []
        if skipped:
            raise UsageError(f"--resume auto: none of the {len(skipped)} checkpoint(s) under {recipe.model_prefix} "
                             "can be resumed (each is named above with the reason); give --overwrite without "
                             "--resume to start the run again, or choose another --model-prefix")
        return found
    if recipe.load_epoch is None:
        return None
    from lit_imgcls.io import exists, load_checkpoint

    path = epoch_path(recipe.model_prefix, recipe.load_epoch)
    if not exists(path):
        have = existing_epochs(recipe.model_prefix or "")
        listed = ", ".join(str(e) for e in have) if have else "none"
        raise UsageError(f"no checkpoint for epoch {recipe.load_epoch} at {path}; epochs saved under this prefix: {listed}")
    load_checkpoint(path)  # a corrupt file fails here with one clear line, before any work starts
    return path


def check_fresh_prefix(prefix: str, overwrite: bool, report: bool = True) -> None:
    """A run from scratch must not silently replace another run's checkpoints under ``prefix``: refused, unless
    ``overwrite``, which removes them first (the files lit-imgcls names ``PREFIX-NNNN``, ``-step-N``, ``-stop``; a
    file of another name is never touched).

    Raises:
        UsageError: ``prefix`` holds checkpoints and ``overwrite`` is False.
    """
    found = saved_checkpoints(prefix)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:2]) + (f" and {len(found) - 2} more" if len(found) > 2 else "")
        raise UsageError(f"model_prefix {prefix} already holds checkpoints of a run ({shown}): add --resume auto to "
                         "continue it, --overwrite to replace it, or choose another --model-prefix")
    if report:
        from lit_imgcls.io import remove_checkpoint

        for path in found:
            remove_checkpoint(path)
        print(f"lit-imgcls: --overwrite: removed {len(found)} checkpoint(s) of the previous run under {prefix}",
              file=sys.stderr, flush=True)
