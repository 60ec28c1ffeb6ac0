"""Every recipe in recipes/ parses through the CLI's parser, has a comment on each key, and builds its model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from lit_imgcls.cli import build_parser
from lit_imgcls.commands.fit import fit
from lit_imgcls.data.cards import load_card
from lit_imgcls.networks import create_network
from lit_imgcls.recipe import FIELDS, Recipe

from conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.stem for p in RECIPES}
    assert {"mnist", "mnist-mlp", "cifar10", "imagenet"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_key_is_known_and_commented(path: Path):
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = line.split(":", 1)[0].strip()
        assert key in FIELDS, f"{path.name}: unknown key {key}"
        assert re.search(r"\s#\s*\S", line), f"{path.name}: key {key} has no comment"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_builds_its_model(path: Path):
    ns = build_parser("fit", fit).parse_args(["--recipe", str(path)]).as_dict()
    recipe = Recipe(**{k: v for k, v in ns.items() if k in FIELDS})
    assert yaml.safe_load(path.read_text()).items() <= {k: getattr(recipe, k) for k in FIELDS}.items()
    # the dataset card: the recipe's own (photos.yaml -> datasets/photos.yaml), else its dataset's; packs and
    # folders take their classes from the data, so a recipe over one names its image_shape and gets 14 classes
    card_names = [n for n in (path.stem, path.stem.split("-")[0], recipe.dataset) if (REPO / "datasets" / f"{n}.yaml").exists()]
    card = load_card(card_names[0]) if card_names else {"classes": [str(i) for i in range(14)]}
    c, h, w = (int(v) for v in recipe.image_shape.split(",")) if recipe.image_shape else card["image_shape"]
    classes = card.get("num_classes") or len(card["classes"])
    net = create_network(recipe.network, num_classes=classes, in_chans=c, img_size=h, num_layers=recipe.num_layers)
    with torch.no_grad():
        out = net.eval()(torch.randn(1, c, h, w))
    assert out.shape == (1, classes)
