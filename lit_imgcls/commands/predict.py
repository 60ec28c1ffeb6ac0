from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lit_imgcls.data.image import MAX_PIXELS


def predict(
    inputs: Sequence[str],
    checkpoint: str | None = None,
    top_k: int = 5,
    format: Literal["table", "json", "csv"] = "table",
    batch_size: int = 64,
    gpus: str = "",
    threads: int | None = None,
    split: str = "val",
    max_pixels: int = MAX_PIXELS,
) -> None:
    """Name the classes in images with a trained checkpoint: top-k classes and softmax probabilities per image.

    Example: lit-imgcls predict --checkpoint model/mnist-0001.ckpt digits/ 'scans/*.png' https://host/a.jpg
    INPUTS: image files, folders (searched recursively), globs, http(s):// and s3:// URLs, and packs
    made by `lit-imgcls dataset pack` (a pack folder or its manifest.json: every sample of --split). Images are
    prepared as the checkpoint's validation data was (input size, grey or RGB, resize and centre crop, mean/std).
    An unreadable image is reported on its own line and the others are still predicted; the exit code is then 1.
    Each shard of a pack is checked against its manifest's sha256 before its samples are predicted: a damaged
    shard is named on stderr, the other shards are still predicted, and the exit code is 1.

    Args:
        inputs: images, folders, globs, URLs or packs to predict.
        checkpoint: the checkpoint (PREFIX-NNNN.ckpt written by fit), or a model file `lit-imgcls export` wrote (ONNX or
            TorchScript; run on the CPU, images prepared by the file's own preprocessing metadata).
        top_k: classes reported per image.
        format: table (aligned, for people), json (one document) or csv (input,rank,class,probability).
        batch_size: images per forward pass.
        gpus: a CUDA device like "0"; empty means CPU.
        threads: CPU threads for compute; default: all cores.
        split: the split of a pack to predict (train, val or test).
        max_pixels: larger images are refused (decompression-bomb guard); raise it for large scans or panoramas.
    """
    import sys

    from lit_imgcls.errors import UsageError

    if not checkpoint:
        raise UsageError("predict needs --checkpoint CKPT (a PREFIX-NNNN.ckpt written by fit)")
    if not inputs:
        raise UsageError("predict needs inputs: image files, folders, globs, URLs or packs")
    if top_k < 1 or batch_size < 1 or max_pixels < 1 or (threads is not None and threads < 1):
        raise UsageError("top_k, batch_size, max_pixels and threads must be positive")
    ids = [v.strip() for v in (gpus or "").split(",") if v.strip()]
    if len(ids) > 1:
        raise UsageError(f"predict runs on one device; give one GPU like --gpus {ids[0]}, not {gpus!r}")
    if ids and not ids[0].isdigit():
        raise UsageError(f"gpus must be a device number like '0' or empty for CPU, got {gpus!r}")
    import torch

    if threads:
        torch.set_num_threads(threads)
    from lit_imgcls.classifier import Classifier
    from lit_imgcls.inputs import expand_inputs
    from lit_imgcls.predictions import FORMATS
    from lit_imgcls.printable import printable
    from lit_imgcls.terminal import write_stdout

    clf = Classifier.load(checkpoint, device=f"cuda:{ids[0]}" if ids else "cpu", max_pixels=max_pixels)
    if clf.meta.ema:  # on stderr: json and csv on stdout stay machine-readable
        print("lit-imgcls: note: predicting with the checkpoint's EMA weights (it was trained with ema_decay "
              f"{clf.meta.recipe.get('ema_decay')})", file=sys.stderr, flush=True)
    bar = None
    if format == "table":
        from lit_imgcls.terminal import progress

        # A bar for people watching a terminal, a line every few seconds in a log (a long run only); json and csv
        # output stay machine-readable on every stream.
        bar = progress(None, "predicting", leave=False)
    damaged: list[str] = []  # whole shards of packs that failed their check: named on stderr whatever the format

    def noting_damaged(sources):
        for src in sources:
            if src.damaged:
                damaged.append(src.error)
            yield src

    try:
        sources = noting_damaged(expand_inputs(inputs, split))
        results = list(clf.predict_sources(sources, top_k=top_k, batch_size=batch_size,
                                           progress=bar.update if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
    write_stdout(FORMATS[format](results))
    failed = [r for r in results if r.error is not None]
    if failed:
        if format == "csv":  # csv has no place for them; table and json carry them in the output
            for r in failed:
                print(printable(f"lit-imgcls: cannot read {r.input}: {r.error}"), file=sys.stderr)
        else:
            for line in damaged:
                print(printable(f"lit-imgcls: error: {line}"), file=sys.stderr)
        print(f"lit-imgcls: {len(failed)} of {len(results)} inputs could not be predicted", file=sys.stderr)
        raise SystemExit(1)
