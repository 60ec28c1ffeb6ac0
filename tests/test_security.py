"""What a recipe file cannot do: import code it names, grant itself --allow-any-class; what the source never does.

The class_path tests run the real CLI in a subprocess (``python -m lit_imgcls fit``) with a module on PYTHONPATH
whose import leaves a file behind, so "not imported" is seen from outside, not inferred from a message.
"""

from __future__ import annotations

import ast
import gc
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml

from lit_imgcls import cli

from conftest import REPO, pythonpath_with, quick_args, run_cli
from test_fuzz_recipe import run_main

# A callback module whose import is visible: it writes IMPORTED; its callback writes RAN when training ends.
SIDE_EFFECT_MODULE = """
    from pathlib import Path

    import lightning as L

    Path({imported!r}).write_text("imported on import")


    class Marker(L.Callback):
        def __init__(self, path):
            self.path = path

        def on_train_end(self, trainer, pl_module):
            Path(self.path).write_text(f"ran {{trainer.current_epoch}} epoch(s)")
"""


@pytest.fixture
def side_effect_site(tmp_path) -> tuple[dict, Path, Path]:
    """(env with the module on PYTHONPATH, the file its import writes, the file its callback writes)."""
    site = tmp_path / "site"
    site.mkdir()
    imported, ran = tmp_path / "IMPORTED", tmp_path / "RAN"
    (site / "sidefx_cb.py").write_text(textwrap.dedent(SIDE_EFFECT_MODULE.format(imported=str(imported))))
    return pythonpath_with(site), imported, ran


def _recipe(tmp_path: Path, **keys) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return str(path)


def _one_clear_line(res, *needles: str) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _tiny(tmp_path: Path, **overrides) -> list[str]:
    return quick_args(tmp_path, num_examples=256, **overrides)


def test_unregistered_module_is_refused_unimported_and_allow_any_class_imports_it(tmp_path, side_effect_site):
    env, imported, ran = side_effect_site
    recipe = _recipe(tmp_path, callbacks=[{"class_path": "sidefx_cb.Marker", "init_args": {"path": str(ran)}}])
    refused = run_cli("fit", "--recipe", recipe, *_tiny(tmp_path), env=env, cwd=tmp_path)
    _one_clear_line(refused, "'sidefx_cb.Marker' refused", "early_stopping", "--allow-any-class")
    assert not imported.exists() and not ran.exists()
    assert not (tmp_path / "model").exists()  # refused before anything was trained or saved

    allowed = run_cli("fit", "--recipe", recipe, *_tiny(tmp_path), "--allow-any-class", env=env, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert imported.read_text() == "imported on import"
    assert ran.read_text() == "ran 1 epoch(s)"  # the recipe's callback was on the Trainer for the whole run


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_os_system_as_a_callback_is_refused(tmp_path, command):
    recipe = _recipe(tmp_path, callbacks=[{"class_path": "os.system", "init_args": {"command": f"touch {tmp_path}/x"}}])
    _one_clear_line(run_cli(command, "--recipe", recipe, *_tiny(tmp_path), cwd=tmp_path),
                    "'os.system' refused", "--allow-any-class")
    assert not (tmp_path / "x").exists()


def test_a_recipe_file_cannot_grant_itself_allow_any_class(tmp_path, side_effect_site):
    env, imported, ran = side_effect_site
    recipe = _recipe(tmp_path, allow_any_class=True,
                     callbacks=[{"class_path": "sidefx_cb.Marker", "init_args": {"path": str(ran)}}])
    _one_clear_line(run_cli("fit", "--recipe", recipe, *_tiny(tmp_path), env=env, cwd=tmp_path),
                    "allow_any_class", "only be given on the command line", "--allow-any-class")
    # nor through an abbreviated --rec, which argparse would expand past the recipe-file checks
    _one_clear_line(run_cli("fit", "--rec", recipe, *_tiny(tmp_path), env=env, cwd=tmp_path), "--rec")
    assert not imported.exists() and not ran.exists()


def test_registered_early_stopping_stops_the_run(tmp_path):
    """3 epochs asked; EarlyStopping (by its registered name) stops after the first, as its threshold is met."""
    stop = {"class_path": "early_stopping",
            "init_args": {"monitor": "val/acc", "mode": "max", "stopping_threshold": 0.0}}
    recipe = _recipe(tmp_path, callbacks=[stop])
    res = run_cli("fit", "--recipe", recipe, *_tiny(tmp_path, num_epochs=3), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "model").glob("*.ckpt")) == ["mnist-0001.ckpt"]
    run_dir = next((tmp_path / "runs").glob("*/version_*"))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [0]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "finished"
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["callbacks"] == [stop]  # the run record says why


def test_builtin_callbacks_are_registered_and_their_paths_are_allowed():
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import EarlyStopping

    from lit_imgcls.classpath import build_callbacks
    from lit_imgcls.recipe import Recipe
    from lit_imgcls.registry import callbacks

    code, out, _ = run_main(["list", "callbacks"])
    assert code == 0 and "early_stopping\tlit-imgcls (lightning.pytorch.callbacks:EarlyStopping)" in out
    assert {"early_stopping", "lr_monitor", "swa"} <= set(callbacks.names())
    assert all(issubclass(callbacks.get(name), Callback) for name in callbacks.names())
    # The registered target, in either spelling, is allowed without the switch.
    for path in ("lightning.pytorch.callbacks.EarlyStopping", "lightning.pytorch.callbacks:EarlyStopping", "early-stopping"):
        built = build_callbacks(Recipe(callbacks=[{"class_path": path, "init_args": {"monitor": "val/acc"}}]))
        assert isinstance(built[0], EarlyStopping) and built[0].monitor == "val/acc"


def test_allow_any_class_travels_beside_the_recipe_not_in_it():
    """The switch reaches the command as its own argument; --print-recipe still prints only recipe keys."""
    code, out, err = run_main(["fit", "--allow-any-class", "--print-recipe", "--callbacks", "[{class_path: a.b.C}]"])
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert "allow_any_class" not in printed and printed["callbacks"] == [{"class_path": "a.b.C"}]
    seen = []

    def engine_fit(recipe, allow_any_class=False, overwrite=False):
        seen.append(allow_any_class)
        return SimpleNamespace(reports=False)  # as a non-zero rank's result: the command prints nothing

    with mock.patch("lit_imgcls.engine.fit", engine_fit):
        for argv in (["fit"], ["fit", "--allow-any-class"], ["fit", "--allow_any_class"]):
            assert cli.main(argv) == 0
    assert seen == [False, True, True]


# -- the source never does these -------------------------------------------------------------------------------

SCANNED = sorted([*(REPO / "lit_imgcls").rglob("*.py"), *(REPO / "tui").rglob("*.py")])
PICKLE_READER = REPO / "lit_imgcls" / "data" / "safe_pickle.py"  # the one allow-listed unpickler
BANNED = {
    "os.system": "runs a shell", "os.popen": "runs a shell", "subprocess.getoutput": "runs a shell",
    "subprocess.getstatusoutput": "runs a shell", "builtins.eval": "runs text as code", "builtins.exec": "runs text as code",
    "yaml.unsafe_load": "builds any Python object", "yaml.full_load": "builds Python objects",
    "yaml.unsafe_load_all": "builds any Python object", "yaml.full_load_all": "builds Python objects",
}
PICKLE = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "_pickle.Unpickler"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (``np`` -> ``numpy``, ``load`` -> ``pickle.load``)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    base = aliases.get(node.id) or (f"builtins.{node.id}" if node.id in ("eval", "exec") else node.id)
    return ".".join([base, *reversed(parts)])


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _parse(source: str, filename: str) -> ast.AST:
    """``ast.parse``, the garbage collector held off and one retry: in CPython 3.11 an interruption while the tree
    is converted (a finalizer's exception; numba's run after the FFCV tests) leaves the converter's depth count
    unbalanced, and the parse fails with "AST constructor recursion depth mismatch" instead (CPython gh-106905)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            return ast.parse(source, filename)
        except SystemError:
            return ast.parse(source, filename)
    finally:
        if was_enabled:
            gc.enable()


def unsafe_uses(source: str, filename: str = "<source>", pickle_ok: bool = False) -> list[str]:
    """Every unsafe call or reference in ``source``, as "file:line: what (why)"; comments and strings never count."""
    tree = _parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        name = _dotted(node, aliases) if isinstance(node, (ast.Attribute, ast.Name)) else None
        if name in BANNED:
            found.append(f"{filename}:{node.lineno}: {name} ({BANNED[name]})")
        if name in PICKLE and not pickle_ok:
            found.append(f"{filename}:{node.lineno}: {name} (unpickling runs code; use data/safe_pickle.py)")
        if not isinstance(node, ast.Call):
            continue
        call = _dotted(node.func, aliases)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
            found.append(f"{filename}:{node.lineno}: shell= (runs a shell)")
        if call in ("yaml.load", "yaml.load_all"):
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            loader_name = _dotted(loader, aliases) if loader is not None else None
            if not (loader_name and "Safe" in loader_name.rsplit(".", 1)[-1]):
                found.append(f"{filename}:{node.lineno}: {call} without a SafeLoader (builds Python objects)")
        if call == "torch.load" and not _is_true(kw.get("weights_only")):
            found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True (unpickles code)")
        if call == "numpy.load" and "allow_pickle" in kw and not (
                isinstance(kw["allow_pickle"], ast.Constant) and kw["allow_pickle"].value is False):
            found.append(f"{filename}:{node.lineno}: numpy.load with allow_pickle (unpickles code)")
    return found


def test_source_has_no_shell_eval_unsafe_yaml_pickle_or_torch_load():
    assert len(SCANNED) > 30 and PICKLE_READER in SCANNED
    found = []
    for path in SCANNED:
        found += unsafe_uses(path.read_text(), str(path.relative_to(REPO)), pickle_ok=path == PICKLE_READER)
    assert found == [], "\n".join(found)


def test_the_scan_finds_what_it_looks_for_and_ignores_words():
    bad = textwrap.dedent('''
        import os, pickle, subprocess, torch, yaml
        import numpy as np
        from os import popen as run_it
        from pickle import loads
        os.system("ls")
        run_it("ls")
        subprocess.run("ls", shell=True)
        subprocess.run(["ls"], shell=flag)
        eval("1"); exec("x = 1")
        pickle.load(f); loads(b""); pickle.Unpickler(f)
        yaml.load(text); yaml.load(text, Loader=yaml.Loader); yaml.unsafe_load(text); yaml.full_load(text)
        torch.load(p); torch.load(p, weights_only=False)
        np.load(p, allow_pickle=True)
    ''')
    found = unsafe_uses(bad)
    assert len(found) == 16 and {int(f.split(":")[1]) for f in found} == set(range(6, 15)), "\n".join(found)
    fine = textwrap.dedent('''
        """Never os.system("x"), eval(text), pickle.load(f) or yaml.load(s) here."""  # nor torch.load(p)
        import subprocess, torch, yaml
        import numpy as np
        model.eval()                                  # a module's eval mode, not the builtin
        subprocess.run(["ls"], shell=False)
        yaml.load(text, Loader=yaml.SafeLoader); yaml.load(text, yaml.CSafeLoader); yaml.safe_load(text)
        torch.load(p, map_location="cpu", weights_only=True)
        np.load(p, allow_pickle=False); np.load(p)
        note = "eval(x) and exec(y) in a string"
    ''')
    assert unsafe_uses(fine) == []
