"""Registries: duplicates, overrides, unknown names, and third-party plugins found through entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lit_imgcls.errors import DuplicateNameError, UnknownNameError
from lit_imgcls.registry import Registry, datasets, networks, strategies

from conftest import pythonpath_with, quick_args, run_cli


def test_duplicate_name_raises_unless_override():
    reg: Registry = Registry("widget", "lit_imgcls.test_widgets_none")
    reg.register("a", 1)
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 3, override=True)
    assert reg.get("a") == 3
    reg.unregister("a")
    assert "a" not in reg and reg.names() == []
    with pytest.raises(KeyError, match="not registered"):
        reg.unregister("a")


def test_unknown_name_lists_choices_and_suggests():
    reg: Registry = Registry("widget", "lit_imgcls.test_widgets_none")
    for name in ("alpha", "beta", "gamma"):
        reg.register(name, name)
    with pytest.raises(UnknownNameError) as err:
        reg.get("alpah")
    text = str(err.value)
    assert "did you mean alpha" in text and "choices: alpha, beta, gamma" in text


def test_builtins_arrive_through_entry_points():
    assert {"lenet", "mlp", "inception_bn", "inception_bn_small"} <= set(networks.names())
    assert {"mnist", "cifar10", "folder"} <= set(datasets.names())
    assert {"local", "device", "local_allreduce_device", "dist_sync", "dist_device_sync", "dist_async"} <= set(strategies.names())
    assert networks.origin("lenet").startswith("lit-imgcls (lit_imgcls.networks.lenet:lenet)")
    # MXNet's spelling with a dash finds the same entry
    assert networks.get("inception-bn") is networks.get("inception_bn")


def test_unknown_network_mentions_timm_and_choices():
    with pytest.raises(UnknownNameError) as err:
        networks.get("lenett")
    assert "did you mean lenet" in str(err.value) and "timm" in str(err.value)
    assert networks.get("resnet18") == "resnet18"  # timm's names pass through


def _write_plugin(root: Path, dist: str, module: str, group_entries: dict[str, dict[str, str]], code: str) -> None:
    """A real installed distribution: a module plus a .dist-info folder with entry_points.txt."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = []
    for group, entries in group_entries.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


PLUGIN = """
    from torch import nn

    def tinynet(pretrained=False, num_classes=10, in_chans=1, img_size=28, **kwargs):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size * img_size, num_classes))
"""


def test_third_party_network_plugin_trains_without_editing_lit_imgcls(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _write_plugin(site, "acme_nets", "acme_nets", {"lit_imgcls.networks": {"tinynet": "acme_nets:tinynet"}}, PLUGIN)
    env = pythonpath_with(site)
    listed = run_cli("list", "networks", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "tinynet\tacme_nets (acme_nets:tinynet)" in listed.stdout
    trained = run_cli("fit", *quick_args(tmp_path, network="tinynet", num_examples=640), env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "val top-1 accuracy" in trained.stdout
    # The plugin network also went into timm's registry, under its entry-point name.
    code = "import timm; from lit_imgcls.networks import create_network; create_network('tinynet', 10, 1, 28); print(timm.is_model('tinynet'))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, **env}, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_two_plugins_claiming_one_name_are_refused(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _write_plugin(site, "one", "one_mod", {"lit_imgcls.networks": {"lenet": "one_mod:tinynet"}}, PLUGIN)
    res = run_cli("list", "networks", env=pythonpath_with(site))
    assert res.returncode != 0
    assert "declared twice" in res.stderr and "lenet" in res.stderr


def test_broken_plugin_names_itself(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _write_plugin(site, "broken", "broken_mod", {"lit_imgcls.networks": {"brokennet": "broken_mod:nothing_here"}}, "x = 1\n")
    res = run_cli("fit", *quick_args(tmp_path, network="brokennet"), env=pythonpath_with(site), cwd=tmp_path)
    assert res.returncode == 2
    assert "brokennet" in res.stderr and "broken" in res.stderr and "Traceback" not in res.stderr
