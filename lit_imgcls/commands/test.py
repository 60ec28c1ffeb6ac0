from __future__ import annotations

from lit_imgcls.recipe import Recipe


def test(recipe: Recipe) -> None:
    """Evaluate trained weights on the test set of a recipe.

    The weights come from MODEL_PREFIX-NNNN.ckpt of --load-epoch, or the newest epoch saved under --model-prefix.

    Args:
        recipe: the recipe the weights were trained with (--recipe FILE, then flags).
    """
    from lit_imgcls.commands.validate import print_metrics
    from lit_imgcls.engine import evaluate

    print_metrics(evaluate(recipe, "test"))


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
