from __future__ import annotations

from typing import Literal


def export(
    checkpoint: str | None = None,
    format: Literal["onnx", "torchscript"] | None = None,
    out: str | None = None,
    overwrite: bool = False,
    check: bool = False,
    check_file: str | None = None,
    dataset: str | None = None,
    data_val: str | None = None,
    batch_size: int | None = None,
    tol_top1: float = 0.1,
    tol_prob: float = 1e-4,
) -> None:
    """Export a checkpoint as one ONNX or TorchScript model file to serve without lit-imgcls, and check it.

    Example: lit-imgcls export --checkpoint model/mnist-0001.ckpt --format onnx --check
    The model takes uint8 images (N, H, W, C) at the checkpoint's input size (N: any batch) and gives class
    probabilities (N, classes); it normalises the images itself (the checkpoint's mean/std). Resizing and cropping
    to the input size are the caller's, as the file's metadata says ('preprocessing': the checkpoint's input size,
    crop mode and share, interpolation, mean/std; 'class_names' in output order); lit-imgcls predict prepares images
    that way. ONNX runs in onnxruntime; a TorchScript file (torch.jit.load) is a program: load only files you trust.
    --check scores the export and the checkpoint on the same validation images (the checkpoint's validation data,
    or --data-val), prints the top-1 of each and the largest probability difference, and exits 2 when they differ
    by more than --tol-top1 or --tol-prob. Test-time flip averaging is not part of an export.

    Args:
        checkpoint: the checkpoint (PREFIX-NNNN.ckpt written by fit).
        format: onnx or torchscript.
        out: the file to write; default CKPT-STEM.onnx or CKPT-STEM.torchscript.pt beside the checkpoint. An
            existing file is refused unless --overwrite is given and it is one lit-imgcls exported there, unchanged
            since.
        overwrite: replace --out if it is a file lit-imgcls exported (recorded in the folder's .lit-imgcls-exports).
        check: after writing, score the export against the checkpoint on the validation data.
        check_file: check this exported file (ONNX or TorchScript) against --checkpoint without writing anything.
        dataset: the dataset to check on (default: the checkpoint's).
        data_val: the validation data to check on (default: the checkpoint's).
        batch_size: images per batch in the check (default: the checkpoint's).
        tol_top1: the largest top-1 difference the check passes, in percentage points.
        tol_prob: the largest difference of any class probability the check passes (float32 arithmetic in another
            order differs by about 1e-7).
    """
    import sys

    from lit_imgcls.errors import UsageError

    if not checkpoint:
        raise UsageError("export needs --checkpoint CKPT (a PREFIX-NNNN.ckpt written by fit)")
    if check_file and (format or out or check or overwrite):
        raise UsageError("--check-file checks a file already exported and writes nothing: give it without --format, "
                         "--out, --check and --overwrite")
    if not check_file and not format:
        raise UsageError("export needs --format onnx or --format torchscript")
    if not (tol_top1 >= 0 and tol_prob >= 0):  # NaN fails too
        raise UsageError(f"--tol-top1 and --tol-prob must be numbers >= 0, got {tol_top1} and {tol_prob}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    from lit_imgcls import export as ex
    from lit_imgcls.io import exists

    if not exists(checkpoint):
        raise UsageError(f"checkpoint not found: {checkpoint}")
    overrides = {k: v for k, v in (("dataset", dataset), ("data_val", data_val), ("batch_size", batch_size))
                 if v is not None}
    if check_file:
        result = ex.check(checkpoint, check_file, overrides, tol_top1, tol_prob)
    else:
        # refused before minutes of work (an empty --out too: it is not the default)
        path = ex.check_out(ex.default_out(checkpoint, format) if out is None else out, overwrite)
        model, meta = ex.build(checkpoint)
        if check:  # the check's data keys, refused before the file is written: a typo must not leave an export
            from lit_imgcls.engine import build_datamodule
            from lit_imgcls.recipe import validate
            from lit_imgcls.score import resolve_recipe

            recipe = resolve_recipe(meta, overrides)
            validate(recipe)
            build_datamodule(recipe)  # made, not read: a dataset's own required keys (npz's data_train)
        path = ex.write(path, ex.to_bytes(model, meta, format), overwrite)
        c, h, w = meta.image_shape
        print(f"export: {path} ({format}, {path.stat().st_size / 1e6:.1f} MB): uint8 images (N, {h}, {w}, {c}) -> "
              f"probabilities (N, {len(meta.class_names)})", flush=True)
        if not check:
            return
        result = ex.check(checkpoint, path, overrides, tol_top1, tol_prob)
    print(result.line(), flush=True)
    if not result.passed:
        sys.stdout.flush()
        raise UsageError(f"export check failed: {result.path} differs from checkpoint {checkpoint} (top-1 by "
                         f"{result.top1_points:.3f} points, tolerance {tol_top1:g}; a probability by "
                         f"{result.max_prob_diff:.3g}, tolerance {tol_prob:g})")
