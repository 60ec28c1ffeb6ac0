from __future__ import annotations

from lit_imgcls.recipe import Recipe


def validate(recipe: Recipe, allow_any_class: bool = False) -> None:
    """Evaluate trained weights on the validation set of a recipe.

    The weights come from MODEL_PREFIX-NNNN.ckpt of --load-epoch, or the newest epoch saved under --model-prefix.

    Args:
        recipe: the recipe the weights were trained with (--recipe FILE, then flags).
        allow_any_class: accept a recipe whose callbacks name unregistered classes by dotted path, as a fit with
            --allow-any-class saves it (evaluation runs no recipe callbacks, so nothing of them is imported).
            A command-line switch only: a recipe file cannot set it.
    """
    from lit_imgcls.engine import evaluate

    print_metrics(evaluate(recipe, "validate", allow_any_class=allow_any_class))


def print_metrics(result) -> None:
    """One line: the checkpoint's epoch, the metrics, and the checkpoint scored (``result``: an
    :class:`~lit_imgcls.engine.Evaluation`)."""
    from lit_imgcls.printable import printable

    text = " | ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items()))
    epoch = result.epoch if result.epoch is not None else "?"
    notes = [n for n, on in (("EMA weights", result.ema), ("test-time flip averaging", result.tta_flip)) if on]
    ema = f" ({', '.join(notes)})" if notes else ""
    print(printable(f"epoch {epoch}: {text} | checkpoint {result.checkpoint}{ema}"), flush=True)
