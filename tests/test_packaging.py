"""An installable wheel (issue 15, item 4): the recipes and dataset cards ship inside the package, `--recipe NAME`
names a shipped recipe, and a wheel installed into a fresh environment trains from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import setuptools
from packaging.specifiers import SpecifierSet

from conftest import REPO, run_cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SHIPPED = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))


def test_the_package_list_covers_every_package_folder():
    """pyproject.toml lists its packages (the mapped recipes/ and datasets/ rule out `find`): a new subpackage of
    lit_imgcls/ or tui/ left out of the list would be missing from the wheel."""
    tool = PYPROJECT["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(REPO), include=["lit_imgcls*", "tui*"]))
    assert set(tool["packages"]) == found | {"lit_imgcls.recipes", "lit_imgcls.cards"}
    assert tool["package-dir"] == {"lit_imgcls.recipes": "recipes", "lit_imgcls.cards": "datasets"}
    # no __init__.py: a package there would shadow Hugging Face's `datasets` for `python -m ...` run from the root
    assert not (REPO / "datasets/__init__.py").exists() and not (REPO / "recipes/__init__.py").exists()


def test_lightning_range_excludes_the_compromised_releases():
    """2.6.2 and 2.6.3 were published with a credential stealer (GHSA-w37p-236h-pfx3)."""
    spec = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("lightning"))
    allowed = SpecifierSet(spec.removeprefix("lightning"))
    assert "2.6.2" not in allowed and "2.6.3" not in allowed and "2.6.1" in allowed and "2.6.4" in allowed
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name in ("lightning", "pytorch-lightning"):
        assert pins[name] in allowed, (name, pins[name])


def test_recipe_by_name(tmp_path):
    """`--recipe mnist` from a folder without a recipes/ reads the shipped recipes/mnist.yaml."""
    res = run_cli("fit", "--recipe", "mnist", "--print-recipe", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "network: lenet" in res.stdout and "fused_steps: 8" in res.stdout
    assert "model_prefix: model/mnist\n" in res.stdout
    res = run_cli("fit", "--recipe=mnist-mlp", "--print-recipe", cwd=tmp_path)
    assert res.returncode == 0 and "network: mlp" in res.stdout, res.stderr


def test_a_file_of_that_name_wins(tmp_path):
    (tmp_path / "mnist").write_text("network: mlp   # mine\n")
    res = run_cli("fit", "--recipe", "mnist", "--print-recipe", cwd=tmp_path)
    assert res.returncode == 0 and "network: mlp" in res.stdout and "fused_steps: 1\n" in res.stdout, res.stderr


def _one_line(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_unknown_name_lists_the_shipped_recipes(tmp_path):
    line = _one_line(run_cli("fit", "--recipe", "mnsit", cwd=tmp_path))
    assert "unknown recipe 'mnsit'" in line and "did you mean mnist?" in line
    assert f"shipped recipes: {', '.join(SHIPPED)}" in line
    # a folder of that name is no recipe file
    (tmp_path / "photos2").mkdir()
    assert "a folder, not a recipe file" in _one_line(run_cli("validate", "--recipe", "photos2", cwd=tmp_path))
    # a path that does not exist stays a path, with the shipped recipe of its name as a hint
    line = _one_line(run_cli("fit", "--recipe", "recipes/mnist.yaml", cwd=tmp_path))
    assert "recipe file not found: recipes/mnist.yaml; the shipped recipe of that name is --recipe mnist" in line


def test_list_recipes():
    res = run_cli("list", "recipes")
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    assert [r[0] for r in rows] == SHIPPED
    by_name = {r[0]: r for r in rows}
    assert by_name["mnist"][1] == "LeNet on MNIST: >= 99% top-1 on the official test set in two epochs on a 2-core CPU."
    assert Path(by_name["mnist"][2]).resolve() == (REPO / "recipes/mnist.yaml").resolve()


def test_cards_env_var_still_wins(tmp_path, monkeypatch):
    from lit_imgcls.data.cards import cards_dir

    assert cards_dir().resolve() == (REPO / "datasets").resolve()
    monkeypatch.setenv("LIT_IMGCLS_CARDS", str(tmp_path))
    assert cards_dir() == tmp_path


@pytest.mark.slow
def test_wheel_installs_and_trains_from_an_empty_folder(tmp_path):
    """`pip wheel .`, installed with --no-deps into a fresh venv that sees the system's torch and Lightning: the
    venv's own lit-imgcls (not the editable install of a checkout) lists the recipes and trains from an empty
    folder with `--recipe mnist`, reading the MNIST card from the wheel."""
    started = time.monotonic()
    src = tmp_path / "src"  # a copy, so the build's build/ and *.egg-info stay out of the checkout
    for name in ("lit_imgcls", "tui", "recipes", "datasets"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    # No PYTHONPATH (a checkout on it would shadow the wheel), no user site, no card folder from the environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIT_IMGCLS_CARDS")}
    env.update(PYTHONNOUSERSITE="1", PYTHONWARNINGS="ignore")

    def run(*cmd, cwd: Path = tmp_path, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("lit_imgcls-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv)
    # The system's pip, run by the venv's Python, installs into the venv; --force-reinstall: the system already
    # has a lit-imgcls of this version (an editable checkout), which must not count as installed.
    run(venv / "bin/python", "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-index", "-q", wheel)
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(venv / "bin/python", "-I", "-c", "import lit_imgcls; from lit_imgcls.data.cards import cards_dir; "
                "print(lit_imgcls.__file__); print(cards_dir())", cwd=empty).stdout.split()
    site = venv.resolve() / "lib"
    assert Path(where[0]).resolve().is_relative_to(site), where
    assert Path(where[1]).resolve().is_relative_to(site) and Path(where[1], "mnist.yaml").is_file(), where

    listed = run(venv / "bin/lit-imgcls", "list", "recipes", cwd=empty).stdout
    rows = [line.split("\t") for line in listed.splitlines()]
    assert [r[0] for r in rows] == SHIPPED
    assert all(Path(r[2]).resolve().is_relative_to(site) for r in rows), listed

    fit = run(venv / "bin/lit-imgcls", "fit", "--recipe", "mnist", "--num-epochs", "1", "--num-examples", "1024",
              "--progress-bar", "false", cwd=empty)
    last = fit.stdout.strip().splitlines()[-1]
    assert last.startswith("final: val top-1 accuracy ") and "checkpoint model/mnist-0001.ckpt" in last, last
    assert (empty / "model/mnist-0001.ckpt").is_file() and (empty / "model/mnist-recipe.yaml").is_file()
    print(f"wheel built, installed and trained in {time.monotonic() - started:.1f} s")
