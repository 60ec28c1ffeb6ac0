from __future__ import annotations

from typing import Literal


def list_plugins(kind: Literal["networks", "datasets", "formats", "strategies", "callbacks", "augmentations",
                              "recipes"],
                 timm: bool = False) -> None:
    """List the names registered in one registry, with the distribution that provides each; or the shipped recipes.

    Args:
        kind: which registry: networks, datasets, formats, strategies (kv-store modes), callbacks (a recipe's
            callbacks key) or augmentations (the stages of a recipe's augment key); or recipes: the shipped recipes (lit-imgcls fit --recipe NAME), with what each
            trains and its file.
        timm: with networks, list every timm model name too.
    """
    if kind == "recipes":
        from lit_imgcls.shipped import recipe_names, recipe_path, recipe_summary

        for name in recipe_names():
            path = recipe_path(name)
            print(f"{name}\t{recipe_summary(path)}\t{path}")
        return
    from lit_imgcls.registry import ALL

    registry = ALL[kind]
    for name in registry.names():
        print(f"{name}\t{registry.origin(name)}")
    if kind == "networks" and timm:
        import timm as timm_lib

        for name in timm_lib.list_models():
            if name not in registry:
                print(f"{name}\ttimm")
