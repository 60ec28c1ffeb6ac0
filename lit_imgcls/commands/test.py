from __future__ import annotations

from lit_imgcls.recipe import Recipe


def test(recipe: Recipe, allow_any_class: bool = False) -> None:
    """Evaluate trained weights on the test set of a recipe.

    The weights come from MODEL_PREFIX-NNNN.ckpt of --load-epoch, or the newest epoch saved under --model-prefix.

    Args:
        recipe: the recipe the weights were trained with (--recipe FILE, then flags).
        allow_any_class: accept a recipe whose callbacks name unregistered classes by dotted path, as a fit with
            --allow-any-class saves it (evaluation runs no recipe callbacks, so nothing of them is imported).
            A command-line switch only: a recipe file cannot set it.
    """
    from lit_imgcls.commands.validate import print_metrics
    from lit_imgcls.engine import evaluate

    print_metrics(evaluate(recipe, "test", allow_any_class=allow_any_class))


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
