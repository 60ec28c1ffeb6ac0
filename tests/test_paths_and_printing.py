"""Paths as a shell writes them (``~``, ``$VAR``) and output that is safe to print (issue 14, items 6 and 7).

One real run writes under a HOME set to a temporary folder through ``~`` and ``$HOME`` in its recipe; its class
names hold a terminal escape, a line break and a bidi override, and every command that prints them is checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from lit_imgcls import cli
from lit_imgcls.errors import UsageError
from lit_imgcls.predictions import Result, format_csv, format_json, format_table
from lit_imgcls.printable import printable
from lit_imgcls.userpaths import expand_path

# A class name that clears the screen, one that writes a fake error line, one that turns the line around.
# The third is also TeX to matplotlib unless told otherwise (score's confusion PNG).
NAMES = ["\x1b[2Jred", "blue\nlit-imgcls: error: fake", "gr\u202eeen $\\frac{$"]
SHOWN = ["\\x1b[2Jred", "blue\\nlit-imgcls: error: fake", "gr\\u202eeen $\\frac{$"]


def _main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` in this process (the real command, no interpreter start): (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _assert_safe(text: str) -> None:
    assert not any(c in text for c in "\x1b\r\u202e"), repr(text)
    assert "lit-imgcls: error: fake" not in text.replace("\\nlit-imgcls", ""), repr(text)


@pytest.fixture(scope="module")
def home_run(tmp_path_factory):
    """fit with model_prefix ~/m/digits, run_dir ${HOME}/runs and data_train $HOME/d.npz, from an empty folder,
    under HOME = a temporary folder: (home, the folder it ran in, the checkpoint, an image file)."""
    tmp = tmp_path_factory.mktemp("home-run")
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 28, 28), dtype=np.uint8)
    y = np.arange(96) % 3
    np.savez(home / "d.npz", x_train=x[:64], y_train=y[:64], x_val=x[64:], y_val=y[64:],
             class_names=np.array(NAMES))
    from PIL import Image

    Image.fromarray(x[0]).save(tmp / "one.png")
    res = run_cli("fit", "--dataset", "npz", "--data-train", "$HOME/d.npz", "--model-prefix", "~/m/digits",
                  "--run-dir", "${HOME}/runs", "--num-epochs", "1", "--batch-size", "32", "--threads", "2",
                  "--progress-bar", "false", "--lr-schedule", "constant", cwd=work, env={"HOME": str(home)})
    assert res.returncode == 0, res.stderr
    return home, work, home / "m" / "digits-0001.ckpt", tmp / "one.png"


def test_tilde_and_home_in_a_recipe_write_under_home_and_nowhere_else(home_run):
    home, work, ckpt, _ = home_run
    assert ckpt.is_file() and (home / "m" / "digits-recipe.yaml").is_file()
    assert list((home / "runs").glob("*/version_0/metrics.csv"))
    assert list(work.iterdir()) == []  # no ./~, ./$HOME or ./${HOME} folder holding half of the run


@pytest.mark.parametrize("key", ["model-prefix", "run-dir", "data-dir", "data-train", "pretrained"])
def test_an_unset_variable_in_a_path_is_one_line_exit_2(tmp_path, key):
    code, out, err = _main(["fit", f"--{key}", "$LIT_IMGCLS_UNSET_X/x", "--print-recipe"])
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and "LIT_IMGCLS_UNSET_X, which is not set" in err and key.replace("-", "_") in err
    assert list(tmp_path.iterdir()) == []


def test_the_error_line_escapes_what_it_quotes():
    code, _, err = _main(["fit", "--recipe", "\x1b[2J\u202enope\r.yaml"])
    assert code == 2 and err.count("\n") == 1 and "not found: \\x1b[2J\\u202enope" in err, err
    _assert_safe(err)


def test_expand_path_as_a_shell(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LIT_X", "sub")
    assert expand_path("~/a/${LIT_X}/$LIT_X.ckpt") == f"{tmp_path}/a/sub/sub.ckpt"
    assert expand_path("~") == str(tmp_path)
    assert expand_path("a/~/b") == "a/~/b"  # as a shell: ~ only at the start
    assert expand_path("cost$$/x") == "cost$/x"
    for url in ("s3://bucket/$LIT_X/~", "https://host/~user/$X", "file://~/x"):
        assert expand_path(url) == url
    for bad, words in [("$LIT_UNSET_Y/x", "LIT_UNSET_Y, which is not set"), ("${LIT_X:-y}", "not supported"),
                       ("a$", "write $$"), ("$1/x", "write $$"), ("~no_such_user_lit/x", "no user")]:
        with pytest.raises(UsageError, match=words.replace("$", r"\$")):
            expand_path(bad, "model_prefix")
    # --print-recipe shows what the run would use; score's too
    code, out, _ = _main(["fit", "--model-prefix", "~/m/x", "--data-dir", "${HOME}", "--print-recipe"])
    assert code == 0 and f"model_prefix: {tmp_path}/m/x\n" in out and f"data_dir: {tmp_path}\n" in out
    code, out, _ = _main(["score", "--data-val", "$HOME/v", "--print-recipe"])
    assert code == 0 and f"data_val: {tmp_path}/v\n" in out


def test_printable_escapes_what_drives_a_terminal():
    assert [printable(n) for n in NAMES] == SHOWN
    assert printable("naïve 猫 café") == "naïve 猫 café"  # letters of every script pass
    assert printable("a\tb\r\x00\x7f\x9b\u2028\udcff") == "a\\tb\\r\\x00\\x7f\\x9b\\u2028\\udcff"


def test_predict_formats_escape_names_and_json_has_no_bare_nan():
    results = [Result("x\x1b[1m.png", [(NAMES[0], float("nan")), (NAMES[1], float("inf"))]),
               Result("bad\n.png", error="cannot\x1b read")]
    for text in (format_table(results), format_csv(results)):
        _assert_safe(text)
        assert SHOWN[0] in text and "x\\x1b[1m.png" in text
    text = format_json(results)
    docs = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert [p["probability"] for p in docs[0]["predictions"]] == [None, None]
    assert docs[0]["predictions"][0]["class"] == NAMES[0]  # JSON keeps the exact string, escaped its own way
    assert "\x1b" not in text


def test_predict_and_score_print_class_names_escaped(home_run):
    home, _, ckpt, image = home_run
    code, out, err = _main(["predict", "--checkpoint", str(ckpt), "--top-k", "3", str(image)])
    assert code == 0, err
    _assert_safe(out + err)
    assert all(s in out for s in SHOWN) and len(out.splitlines()) == 2  # the header, the image's row
    code, out, err = _main(["predict", "--checkpoint", str(ckpt), "--format", "json", str(image)])
    assert code == 0 and {p["class"] for p in json.loads(out)[0]["predictions"]} == set(NAMES)
    code, out, err = _main(["score", "--checkpoint", str(ckpt), "--data-train", str(home / "d.npz"),
                            "--confusion-png", str(home / "c.png"), "--threads", "2"])
    assert code == 0, err
    _assert_safe(out + err)
    assert all(s in out for s in SHOWN) and (home / "c.png").stat().st_size > 0


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    """A pack of a folder whose class folders are named with an OSC title escape and a carriage return."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("pack")
    src = tmp / "src"
    for c, name in enumerate(PACK_NAMES):
        (src / name).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 40 * c + i).save(src / name / f"{i}.png")
    code, _, err = _main(["dataset", "pack", str(src), str(tmp / "pack"), "--format", "wds"])
    assert code == 0, err
    _assert_safe(err)
    return tmp / "pack"


PACK_NAMES = ["\x1b]0;title\x07cat", "dog\rlit-imgcls: ok"]


def test_dataset_inspect_and_verify_print_a_pack_s_class_names_escaped(pack_dir):
    code, out, err = _main(["dataset", "inspect", str(pack_dir)])
    assert code == 0, err
    _assert_safe(out + err)
    assert any(printable(n) in out for n in PACK_NAMES), out
    code, out, err = _main(["dataset", "verify", str(pack_dir)])
    assert code == 0, err
    _assert_safe(out + err)


@pytest.mark.parametrize("which", ["predict", "inspect"])
def test_a_reader_that_stops_reading_gets_no_traceback(home_run, pack_dir, which):
    """``lit-imgcls predict ... | head -1``: the reader is gone before a byte is written (the harshest case)."""
    home, _, ckpt, image = home_run
    argv = (["predict", "--checkpoint", str(ckpt), "--threads", "2", str(image), str(image)] if which == "predict"
            else ["dataset", "inspect", str(pack_dir)])
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "lit_imgcls", *argv], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "HOME": str(home)})
    os.close(write)
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert proc.returncode == 141, (proc.returncode, proc.stderr)
