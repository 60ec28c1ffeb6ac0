from __future__ import annotations

from lit_imgcls.recipe import Recipe


def validate(recipe: Recipe) -> None:
    """Evaluate trained weights on the validation set of a recipe.

    The weights come from MODEL_PREFIX-NNNN.ckpt of --load-epoch, or the newest epoch saved under --model-prefix.

    Args:
        recipe: the recipe the weights were trained with (--recipe FILE, then flags).
    """
    from lit_imgcls.engine import evaluate

    print_metrics(evaluate(recipe, "validate"))


def print_metrics(metrics: dict[str, float]) -> None:
    epoch = metrics.pop("checkpoint_epoch", float("nan"))
    text = " | ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
    print(f"epoch {int(epoch) if epoch == epoch else '?'}: {text}", flush=True)
