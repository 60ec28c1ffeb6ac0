"""Fuzzing the recipe parser: whatever a recipe file holds, the CLI succeeds or says what is wrong in one line.

Documents come from hypothesis (derandomized, so CI sees the same ones every run): mappings over the real recipe
keys and junk keys with values of every YAML type, YAML-ish token soup, and raw bytes. Each goes through the CLI's
real path in this process, ``lit_imgcls.cli.main``: once with ``--print-recipe`` (parsing only) and once as a
``fit`` whose engine only validates the recipe and builds its callbacks (everything a run checks before training).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_imgcls import cli, engine
from lit_imgcls.classpath import build_callbacks, check_class_paths, registered_paths
from lit_imgcls.errors import UsageError
from lit_imgcls.recipe import FIELDS, Recipe, validate

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYS = sorted(FIELDS)
HINTS = typing.get_type_hints(Recipe)
# What a class_path may be: registered names and paths (these import only what is registered), paths nobody
# registered (refused before import), near misses and garbage.
CLASS_PATHS = ["early_stopping", "lr_monitor", "swa", "early-stopping", "EarlyStopping", "nope",
               *sorted(registered_paths()), "lightning.pytorch.callbacks:EarlyStopping", "lit_imgcls.networks.lenet:lenet",
               "os.system", "os:system", "subprocess.Popen", "builtins.eval", "this.s", "evil_fuzz_mod.Boom",
               "a..b", ".x", "x.", ":", "pkg.mod:", "1bad.mod", "pkg.mod:Cls.Inner", ""]


def _scalars() -> st.SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(), st.sampled_from([0, -1, 2**31, -(2**63), 2**64, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-320]),
        st.text(max_size=40), st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda t: t * 1000),
        st.sampled_from(["", " ", "~", "\x00", "\ufeff", "\u202e", "0,1,x", "1,2,3", "auto", "../../etc/passwd",
                         "s3://bucket/x", "-1", "1e400", ".nan", "yes", "off", "0x1F", "2001-12-14", "nan,inf"]),
        st.binary(max_size=20), st.dates(), st.datetimes(),
    )


VALUES = st.recursive(_scalars(), lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.one_of(st.sampled_from(["class_path", "init_args", "monitor", "mode"]), st.text(max_size=10)), kids, max_size=4),
    max_leaves=12)


def _typed(key: str) -> st.SearchStrategy:
    """A value of ``key``'s own type, so that many documents get past the types to validate()."""
    hint = HINTS[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and type(None) in typing.get_args(hint) else hint
    if key == "callbacks":
        item = st.fixed_dictionaries({"class_path": st.sampled_from(CLASS_PATHS)},
                                     optional={"init_args": st.dictionaries(st.sampled_from(
                                         ["monitor", "mode", "patience", "min_delta", "swa_lrs", "logging_interval",
                                          "stopping_threshold", "verbose", "bogus"]), _scalars(), max_size=3)})
        return st.none() | st.lists(item, max_size=3)
    if key == "augment":
        from lit_imgcls.registry import augmentations

        names = st.sampled_from([*augmentations.names(), "bogus"])
        stage = st.fixed_dictionaries({"name": names}, optional={arg: VALUES | st.floats(-1, 400) for arg in (
            "pad", "fill", "p", "area", "ratio", "degrees", "min", "max", "h", "s", "l", "brightness", "std",
            "num_ops", "magnitude", "policy", "value", "alpha", "bogus")})
        return st.none() | st.lists(names | stage, max_size=4)
    if typing.get_origin(base) is typing.Literal:
        return st.sampled_from(typing.get_args(base))
    if base is bool:
        return st.booleans()
    if base is int:
        return st.integers(min_value=-5, max_value=10**6) | st.sampled_from([2**64, -(2**63)])
    if base is float:
        return st.floats(allow_nan=True, allow_infinity=True)
    if base is str:
        return st.sampled_from(["", "lenet", "mlp", "mnist", "resnet", "0", "0,1", "3,28,28", "30,60", "auto", "device",
                                "32-true", "x" * 5000]) | st.text(max_size=20)
    raise TypeError(f"no strategy for recipe key {key} of type {hint}")


@st.composite
def _recipe_mapping(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=6, unique=True))
    # Mostly values of the key's type, so that most documents get as far as validate() and the callbacks.
    doc = {k: draw(VALUES) if draw(st.integers(0, 11)) == 0 else draw(_typed(k)) for k in keys}
    if draw(st.integers(0, 7)) == 0:  # junk keys, and the command-line-only switch a file must not set
        doc[draw(st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none(), st.floats(),
                           st.sampled_from(["allow_any_class", "print_recipe", "recipe", "config", "lr_facter"])))] = draw(VALUES)
    return doc


def _dump(doc, allow_unicode: bool) -> bytes:
    text = yaml.safe_dump(doc, allow_unicode=allow_unicode, sort_keys=False)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate makes bytes that are not UTF-8: fine, fuzz it


TOKENS = ["lr", "batch_size", "callbacks", "class_path", "init_args", "allow_any_class", ":", ": ", "\n", "  ", "- ",
          "[", "]", "{", "}", ",", "'", '"', "&a ", "*a", "<<: *a", "? ", "|", ">", "---", "...", "%YAML 1.1", "%TAG",
          "!!python/object/apply:os.system ['true']", "!!binary ", "!!float ", "!!int ", "!!str ", "!!set ", "!!omap ",
          "!!bool ", "!!timestamp ", "!!null ", "!!map ", "!!seq ", "0b", "0o", "_", "-",
          ".nan", ".inf", "1e400", "0x10", "0o7", "~", "null", "true", "\t", "\x00", "\ufeff", "\\", "#", "é", "\U0001f600"]
_KINDS = {
    "recipe": st.builds(_dump, _recipe_mapping(), st.booleans()),
    "any YAML value": st.builds(_dump, VALUES, st.booleans()),
    "token soup": st.lists(st.sampled_from(TOKENS), max_size=30).map(lambda parts: "".join(parts).encode("utf-8")),
    # PyYAML's own constructors once failed on these with bare IndexError/KeyError/ValueError (`!!int _`).
    "tagged scalar": st.builds(
        lambda key, tag, word: f"{key}: {tag} {word}\n".encode("utf-8", "surrogatepass"), st.sampled_from(KEYS),
        st.sampled_from(["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!null", "!!str", "!!set", "!!omap",
                         "!!python/name:os.system", "!<tag:yaml.org,2002:int>"]),
        st.sampled_from(["", "_", "lr", "0x", "0b", "0o", "1:", ".", "-", "2001-13-45", "x", "1e400"]) | st.text(max_size=6)),
    "bytes": st.binary(max_size=200),
    "text": st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
}
# Weighted towards recipes, which get furthest (to validate() and the callbacks); the rest stop at reading.
DOCUMENTS = st.sampled_from(["recipe"] * 6 + [k for k in _KINDS if k != "recipe"]).flatmap(_KINDS.__getitem__)


def _validate_only(recipe, datamodule=None, allow_any_class=False, overwrite=False):
    """The engine's fit up to the first thing that costs time: every check a run makes, no training."""
    validate(recipe, allow_any_class=allow_any_class)
    recipe.build_callbacks(allow_any_class)
    return SimpleNamespace(reports=False)  # as a non-zero rank's result: fit prints nothing


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` in this process: (exit code, stdout, stderr); any exception it lets out goes up."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch.object(engine, "fit", _validate_only):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_success_or_one_clear_line(code: int, stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    if code == 0:
        return
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("lit-imgcls: error: "), stderr


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    # One file, rewritten for each example: hypothesis runs many examples inside one test call.
    return tmp_path_factory.mktemp("fuzz") / "recipe.yaml"


@given(document=DOCUMENTS)
@FUZZ
def test_any_recipe_file_parses_or_fails_in_one_line(recipe_file, document):
    recipe_file.write_bytes(document)
    for argv in (["fit", "--recipe", str(recipe_file), "--print-recipe"], ["fit", "--recipe", str(recipe_file)]):
        code, out, err = run_main(argv)
        assert_success_or_one_clear_line(code, err)
        if code == 0 and "--print-recipe" in argv:
            assert isinstance(yaml.safe_load(out), dict)  # what it prints is a recipe again


# Documents that broke the parser once (marked "was a crash"), or that attack a YAML reader on purpose: each must
# be refused in one line.
_BOMB = "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
NASTY = {
    "alias bomb": "callbacks:\n- class_path: early_stopping\n  init_args:\n    a: &a [x, x, x, x, x, x, x, x, x]\n"
                  + "".join("    " + line + "\n" for line in _BOMB.splitlines()) + "    monitor: *i\n",
    "recursive alias": "callbacks: &c [{class_path: early_stopping, init_args: {monitor: *c}}]\n",
    "recursive mapping": "callbacks: [&m {class_path: early_stopping, init_args: *m}]\n",
    "deep nesting (was a crash)": "callbacks: " + "[" * 5000 + "]" * 5000 + "\n",
    "not UTF-8 (was a crash)": b"lr: \xff\xfe0.1\n",
    "5000-digit integer (was a crash)": "batch_size: " + "9" * 5000 + "\n",
    "huge hex integer (was a crash)": "batch_size: 0x" + "f" * 5000 + "\n",
    "64-bit overflow": f"seed: {2**64}\n",
    "float overflow": "lr: 1e400\n",
    "NaN": "wd: .nan\n",
    "lone surrogate escape": 'network: "\\ud800"\n',
    "NUL in a path": 'data_dir: "/tmp/\\0x"\n',
    "NUL under ~ (was a crash)": 'pretrained: "~\\0root/w.pt"\n',
    "line breaks in a path": 'data_train: "/tmp/a\\nb\\rc\\u2028d"\n',
    "unicode digits in image_shape (was a crash)": "image_shape: '\u00b2,28,28'\n",
    "binary value": "network: !!binary aGVsbG8=\n",
    "empty !!int (was a crash)": "batch_size: !!int _\n",
    "!!int of a word (was a crash)": "batch_size: !!int lr\n",
    "empty !!float (was a crash)": "lr: !!float\n",
    "!!bool of a word (was a crash)": "nesterov: !!bool maybe\n",
    "bad !!timestamp (was a crash)": "network: !!timestamp 2001-13-45\n",
    "!!timestamp of a word (was a crash)": "network: !!timestamp x\n",
    "python tag": "lr: !!python/object/apply:os.system ['true']\n",
    "set key": "? !!set {a: null}\n: 1\n",
    "two documents": "lr: 0.1\n---\nlr: 0.2\n",
    "allow_any_class in the file": "allow_any_class: true\ncallbacks: [{class_path: os.system}]\n",
    "a date in init_args (checkpoints would not load)": "callbacks: [{class_path: swa, init_args: {swa_lrs: !!timestamp 2001-01-01}}]\n",
    "init_args with int keys": "callbacks: [{class_path: early_stopping, init_args: {1: 2}}]\n",
    "misspelt init_arg": "callbacks: [{class_path: early_stopping, init_args: {monitr: val/acc}}]\n",
    "init_arg the class rejects": "callbacks: [{class_path: early_stopping, init_args: {monitor: val/acc, mode: up}}]\n",
    "registered path that is no callback": "callbacks: [{class_path: 'lit_imgcls.networks.lenet:lenet'}]\n",
    "unknown callback name": "callbacks: [{class_path: early_stoping}]\n",
    "item with an unknown key": "callbacks: [{class_path: swa, init_arg: {}}]\n",
}


@pytest.mark.parametrize("name", list(NASTY))
def test_nasty_recipe_files_fail_in_one_line(tmp_path, name):
    text = NASTY[name]
    (tmp_path / "r.yaml").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    code, _, err = run_main(["fit", "--recipe", str(tmp_path / "r.yaml")])
    assert_success_or_one_clear_line(code, err)
    assert code == 2, err  # every one of these is bad input
    code, _, err = run_main(["fit", "--recipe", str(tmp_path / "r.yaml"), "--print-recipe"])
    assert_success_or_one_clear_line(code, err)  # printing checks less: some print


# Names of modules that exist or may exist, are not imported yet, and would do something if they were.
UNIMPORTED = st.one_of(
    st.sampled_from(["this", "antigravity", "turtle", "idlelib.idle", "tkinter", "smtpd", "lib2to3.main",
                     "evil_fuzz_mod", "pkg_that_is_not_there.sub"]),
    st.from_regex(r"zz_[a-z][a-z0-9_]{0,12}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True),
)


class _ImportRecorder:
    """A meta-path finder that records every import asked for and finds nothing (the real finders come after)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        self.asked.append(fullname)
        return None


@given(module=UNIMPORTED, attr=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), colon=st.booleans())
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
def test_refused_class_path_is_never_imported(module, attr, colon):
    path = f"{module}:{attr}" if colon else f"{module}.{attr}"
    recipe = Recipe(callbacks=[{"class_path": path, "init_args": {"x": 1}}])
    before = set(sys.modules)
    recorder = _ImportRecorder()
    sys.meta_path.insert(0, recorder)
    try:
        for check in (check_class_paths, build_callbacks):
            with pytest.raises(UsageError, match="--allow-any-class") as err:
                check(recipe, False)
            assert repr(path) in str(err.value) and "early_stopping" in str(err.value)
    finally:
        sys.meta_path.remove(recorder)
    top = module.split(".")[0]
    assert not any(name == top or name.startswith(top + ".") for name in recorder.asked), recorder.asked
    assert set(sys.modules) - before == set(), set(sys.modules) - before


def test_allowed_class_path_is_checked_without_import():
    """With --allow-any-class the check lets any path through, and still imports nothing: building does."""
    recipe = Recipe(callbacks=[{"class_path": "zz_not_there_mod.Cb"}])
    recorder = _ImportRecorder()
    sys.meta_path.insert(0, recorder)
    try:
        assert [ref.module for ref in check_class_paths(recipe, True)] == ["zz_not_there_mod"]
        assert recorder.asked == []
        with pytest.raises(UsageError, match="cannot import 'zz_not_there_mod'"):
            build_callbacks(recipe, True)
        assert "zz_not_there_mod" in recorder.asked
    finally:
        sys.meta_path.remove(recorder)


def test_every_recipe_key_is_fuzzed():
    """The fuzz draws typed values for every key: a new key needs no edit here, a key of a new kind of type does."""
    for key in FIELDS:
        _typed(key)  # raises TypeError for a type this file cannot generate
