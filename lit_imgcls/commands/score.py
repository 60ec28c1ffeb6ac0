from __future__ import annotations

import dataclasses
import typing
from typing import Any

import docstring_parser

from lit_imgcls.recipe import Recipe

_OWN = {
    "checkpoint": (str | None, "the checkpoint to score (PREFIX-NNNN.ckpt written by fit), or a model file `lit-imgcls export` wrote (ONNX or TorchScript: run on the CPU, with --dataset and its data given, as the file holds no recipe); required."),
    "confusion_png": (str | None, "where to write the confusion matrix PNG; default CKPT-STEM-confusion.png beside it (in the current folder for a checkpoint at a URL). A --confusion-png file that score did not write there is refused."),
    "report": (str | None, "also write an evaluation report: PATH.html (one self-contained offline page: per-class precision/recall/F1, balanced accuracy, the confusion matrix, the worst confusions, the most confident mistakes as thumbnails, top-k accuracy, expected calibration error with a reliability diagram) and the same numbers as PATH.json beside it. A file of either name that lit-imgcls did not write there is refused."),
    "calibrate": (bool | None, "fit temperature scaling (Guo et al. 2017) on the validation split, print the temperature and the ECE (15 bins) and NLL before and after, and write a calibrated checkpoint that predict, score and export use; the checkpoint scored is never changed."),
    "calibrated_out": (str | None, "where --calibrate writes; default CKPT-STEM-calibrated.ckpt beside the checkpoint (in the current folder for one at a URL). The name must end in -calibrated.ckpt; a file there that lit-imgcls did not write is refused."),
}
_TOP_K_DOC = "also report top-k accuracy (default 5, at most the class count; 0 or 1 turns it off)."


def _options_class() -> type:
    """ScoreOptions: --checkpoint, --confusion-png, --report, and every recipe key, each None (= the checkpoint's) unless given.

    The dispatcher hands a command that takes a dataclass nothing but that dataclass, filled from --recipe FILE and
    the flags; every key being None until given is what lets the checkpoint's saved recipe fill in the rest.
    """
    hints = typing.get_type_hints(Recipe)
    docs = {p.arg_name: " ".join((p.description or "").split())
            for p in docstring_parser.parse(Recipe.__doc__ or "").params}
    docs["top_k"] = _TOP_K_DOC
    # A bool of our own is a switch (--calibrate alone turns it on; the CLI reads the field's metadata).
    fields: list[tuple[str, Any, Any]] = [(n, t, dataclasses.field(default=None, metadata={"switch": t == bool | None}))
                                          for n, (t, _) in _OWN.items()]
    fields += [(f.name, hints[f.name] | None, dataclasses.field(default=None)) for f in dataclasses.fields(Recipe)]
    args = [f"    {n}: {d}" for n, (_, d) in _OWN.items()]
    args += [f"    {f.name}: {docs.get(f.name, '')}" + ("" if f.name == "top_k" else " (default: the checkpoint's)")
             for f in dataclasses.fields(Recipe)]
    doc = "Options of score: the checkpoint, then recipe keys replacing its saved recipe's.\n\nArgs:\n" + "\n".join(args)

    def given(self) -> dict[str, Any]:
        """Recipe keys set by --recipe FILE or a flag."""
        recipe_keys = {f.name for f in dataclasses.fields(Recipe)} - {"top_k"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k in recipe_keys and v is not None}

    def to_yaml(self) -> str:
        """The recipe score would use (--print-recipe)."""
        if not self.checkpoint:
            return Recipe(**self.given()).to_yaml()
        from lit_imgcls.score import load_scored, resolve_recipe

        given = self.given()
        return resolve_recipe(load_scored(self.checkpoint, given)[1], given).to_yaml()

    cls = dataclasses.make_dataclass("ScoreOptions", fields, namespace={"__doc__": doc, "given": given, "to_yaml": to_yaml})
    cls.__module__ = __name__
    return cls


ScoreOptions = _options_class()


def score(options: ScoreOptions) -> None:
    """Evaluate a checkpoint on a validation split (MXNet's score.py): accuracy, per class too, and confusions.

    Prints top-1 and top-k accuracy, images/s, accuracy per class and the confusion matrix, and saves the matrix
    as a PNG. --report PATH.html also writes an evaluation report page (per-class precision/recall/F1, balanced
    accuracy, confusions, the most confident mistakes as thumbnails, calibration) and its numbers as PATH.json.
    --calibrate also fits a temperature on the split and writes CKPT-STEM-calibrated.ckpt beside it.

    Example: lit-imgcls score --checkpoint model/mnist-0001.ckpt --top-k 3 --report report.html
    The dataset is the one the checkpoint was trained with (its saved recipe); recipe flags or --recipe FILE
    replace any of its keys, e.g. --dataset wds --data-val packs/val, or --gpus 0 to run on a GPU.

    Args:
        options: --checkpoint CKPT, --confusion-png PATH, --report PATH.html, --calibrate, --calibrated-out PATH,
            --top-k K, and recipe keys overriding the checkpoint's.
    """
    from lit_imgcls.errors import UsageError
    from lit_imgcls.score import confusion_target, report, save_confusion_png
    from lit_imgcls.score import score as run_score

    if not options.checkpoint:
        raise UsageError("score needs --checkpoint CKPT (a PREFIX-NNNN.ckpt written by fit)")
    top_k = 5 if options.top_k is None else options.top_k
    if top_k < 0:
        raise UsageError(f"top_k must be >= 0, got {top_k}")
    calibrated = pages = thumbnails = None
    if options.calibrate:  # refused before minutes of scoring: an export, a bad name, a file there not ours
        from lit_imgcls import calibrate

        calibrated = calibrate.target(options.checkpoint, options.calibrated_out)
    elif options.calibrated_out is not None:
        raise UsageError("--calibrated-out names the file --calibrate writes: give --calibrate too")
    if options.report is not None:  # refused before minutes of scoring: a bad name, or files there that are not ours
        from lit_imgcls.report import MistakeThumbnails, report_paths

        pages = report_paths(options.report)
        thumbnails = MistakeThumbnails()
    png, owned = confusion_target(options.checkpoint, options.confusion_png)  # before scoring: not a file of theirs
    if any(png.absolute() == other.absolute() for other in [*(pages or ()), *([calibrated] if calibrated else [])]):
        raise UsageError(f"--confusion-png {png} is also a file --report or --calibrate writes; give another")
    # --calibrate fits on the raw probabilities (temperature 1), also of a checkpoint already calibrated.
    result = run_score(options.checkpoint, options.given(), top_k=top_k, observe=thumbnails,
                       temperature=1.0 if calibrated else None)
    fitted = calibrate.run(result, options.checkpoint, calibrated) if calibrated else None
    png = save_confusion_png(result, png, owned)
    print(report(result) + f"confusion matrix PNG: {png}", flush=True)
    if fitted:
        from lit_imgcls.printable import printable_lines

        print(printable_lines(fitted.report()), end="", flush=True)
    if pages:
        from lit_imgcls.printable import printable
        from lit_imgcls.report import write_report
        from lit_imgcls.score import report_data

        page, data = write_report(report_data(result), *pages, thumbnails)
        print(f"report: {printable(str(page))}\nreport data: {printable(str(data))}", flush=True)
