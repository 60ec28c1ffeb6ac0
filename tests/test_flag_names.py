"""Messages name flags that exist (issue 13, item 5).

Every flag (``--something``) that lit-imgcls's own text names must be a flag of the command that prints it:
``predict`` once suggested a ``--max-pixels`` it did not accept. Two walks check it:

1. Every string literal in ``lit_imgcls/`` and ``tui/`` that is not a docstring (error and warning messages,
   notes, hints, the argv lists the TUI builds), found with Python's ``ast``; an f-string is read as one text
   with its ``{...}`` parts left out, so ``--no-{name}`` (a flag made at run time) is not mistaken for ``--no``.
   Each source file is mapped (``MODULES`` below) to the commands that can print its messages.
2. The ``--help`` text of every command, as the CLI builds it (the function's docstring, the recipe's field
   docs), against that command's own flags. Docstrings elsewhere are for developers and not checked.

Which command a flag must exist on:

- A message that names a command before the flag (``lit-imgcls dataset pack ... --resize``, or a command in
  backticks: ```predict` takes --max-pixels``) is checked against the nearest such command: that is how a
  training error points at a pack flag honestly.
- Otherwise against the commands of the file's group. ``ALL`` groups (a command's own module, the predict side,
  the pack side, each benchmark): the flag must exist on *every* command of the group, since every one of them
  can print the message. ``ANY`` groups (the training side shared by fit/validate/test/score, and the shared
  plumbing): on *at least one*; these four share every recipe key, and the few command-only flags (fit's
  ``--resume``/``--overwrite``, score's ``--checkpoint``) appear only in messages on that command's own path,
  which a static walk cannot see. ``ANY`` still catches a flag no command has (a pack flag in a training
  message, a renamed key).

A file missing from ``MODULES`` fails the test, so a new module gets mapped when it is added.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import REPO

from lit_imgcls.cli import COMMANDS, _resolve, build_parser

RECIPE = ("fit", "validate", "test", "score")  # the commands that take the Recipe's keys as flags
TOP = "lit-imgcls"  # the top level: `lit-imgcls --help`, `lit-imgcls --version`
EVERY = tuple(COMMANDS) + (TOP,)

# path (relative to the repository, or a folder ending in "/" for everything below it) -> (mode, commands).
# The first match wins, so more specific entries come first.
MODULES: list[tuple[str, tuple[str, tuple[str, ...]]]] = [
    # the dispatcher defines the flags and the top-level ones
    ("lit_imgcls/cli.py", ("ANY", EVERY)),
    ("lit_imgcls/__init__.py", ("ANY", EVERY)),
    ("lit_imgcls/__main__.py", ("ANY", EVERY)),
    ("lit_imgcls/errors.py", ("ANY", EVERY)),
    ("lit_imgcls/commands/__init__.py", ("ANY", EVERY)),
    # lit_imgcls/commands/<module>.py: the commands whose function lives there (filled in below)
    # the predict side
    ("lit_imgcls/classifier.py", ("ALL", ("predict",))),
    ("lit_imgcls/inputs.py", ("ALL", ("predict",))),
    ("lit_imgcls/predictions.py", ("ALL", ("predict",))),
    # what a checkpoint says: read by predict and score, and by fit/validate/test (resume, fine-tune, evaluate)
    ("lit_imgcls/checkpoint_meta.py", ("ALL", ("predict",) + RECIPE)),
    ("lit_imgcls/score.py", ("ALL", ("score",))),
    ("lit_imgcls/calibrate.py", ("ALL", ("score",))),
    ("lit_imgcls/export.py", ("ALL", ("export",))),
    # the pack side
    ("lit_imgcls/data/pack.py", ("ALL", ("dataset pack",))),
    ("lit_imgcls/data/sources.py", ("ALL", ("dataset pack",))),
    ("lit_imgcls/data/encode.py", ("ALL", ("dataset pack",))),
    ("lit_imgcls/data/pack_report.py", ("ALL", ("dataset pack", "dataset inspect"))),
    ("lit_imgcls/data/pack_check.py", ("ALL", ("dataset inspect", "dataset verify"))),
    ("lit_imgcls/data/photos.py", ("ALL", ("dataset photos",))),
    # read by every route that opens a pack or an image
    ("lit_imgcls/data/manifest.py", ("ANY", RECIPE + ("predict", "dataset pack", "dataset inspect", "dataset verify"))),
    ("lit_imgcls/data/image.py", ("ANY", RECIPE + ("predict", "dataset pack"))),
    ("lit_imgcls/data/formats/tar_shards.py", ("ANY", RECIPE + ("predict", "dataset pack"))),
    # training reads .beton files; `dataset pack` only writes them (write_beton), with no message naming a flag
    ("lit_imgcls/data/formats/ffcv.py", ("ANY", RECIPE)),
    ("lit_imgcls/data/classes.py", ("ANY", RECIPE + ("dataset pack",))),
    # benchmarks and the other single-command helpers
    ("lit_imgcls/bench.py", ("ALL", ("benchmark train", "benchmark infer"))),
    ("lit_imgcls/bench_io.py", ("ALL", ("benchmark io",))),
    ("lit_imgcls/plot.py", ("ALL", ("plot",))),
    ("lit_imgcls/strategies/launch.py", ("ALL", ("launch",))),
    ("lit_imgcls/registry.py", ("ANY", RECIPE + ("list", "benchmark train", "benchmark infer", "benchmark io"))),
    # the training side: the recipe, the engine, its module, callbacks, data modules, networks, strategies
    ("lit_imgcls/data/", ("ANY", RECIPE + ("benchmark io",))),
    ("lit_imgcls/callbacks/", ("ANY", RECIPE)),
    ("lit_imgcls/networks/", ("ANY", RECIPE + ("benchmark train", "benchmark infer", "list"))),
    ("lit_imgcls/strategies/", ("ANY", RECIPE)),
    ("lit_imgcls/", ("ANY", RECIPE)),  # engine, recipe, module, schedules, preflight, classpath, resume_changes, io
    # the TUI: `python -m tui` is `lit-imgcls tui`; the launcher and its screens build `fit` and `dataset pack` lines
    ("tui/__main__.py", ("ALL", ("tui",))),
    ("tui/launcher.py", ("ALL", ("fit",))),
    ("tui/app.py", ("ANY", ("fit", "tui"))),
    ("tui/screens/launch.py", ("ALL", ("fit",))),
    ("tui/screens/recipe_builder.py", ("ALL", ("fit",))),
    ("tui/screens/pack.py", ("ALL", ("dataset pack",))),
    # the run's report: the TUI runs `score --report` for it
    ("tui/reports.py", ("ALL", ("score",))),
    ("tui/screens/report.py", ("ALL", ("score",))),
    # the help lists the keys of every screen, the report's (score --report) among them
    ("tui/screens/help.py", ("ANY", ("fit", "tui", "dataset pack", "score"))),
    ("tui/", ("ANY", ("fit", "tui", "dataset pack"))),
]

# Flags of other tools, quoted on purpose: (path, flag) -> why. Nothing else may name a flag lit-imgcls lacks.
ALLOWED = {
    # rsync's own options in the command line `launch --sync-dir` runs
    ("lit_imgcls/strategies/launch.py", "--delete"): "rsync",
    ("lit_imgcls/strategies/launch.py", "--protect-args"): "rsync",
    ("lit_imgcls/strategies/launch.py", "--filter"): "rsync",
    # the internal argv of `python -m lit_imgcls.bench` (one gated benchmark case per process), not a user flag
    ("lit_imgcls/bench.py", "--gated"): "internal worker argv",
}
ALLOWED_HELP = {
    # the MXNet options these commands replace, named as MXNet spelled them
    ("benchmark io", "--test-io"): "MXNet's common/fit.py",
    ("benchmark train", "--benchmark"): "MXNet's common/data.py",
    # rsync's option, in what --sync-dir runs ("rsync -a --delete")
    ("launch", "--delete"): "rsync",
}

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*(?![-_\w\0])")
HOLE = "\0"  # an f-string's {...}


@lru_cache(maxsize=None)
def flags_of(command: str) -> frozenset[str]:
    if command == TOP:
        return frozenset({"--help", "--version"})
    parser = build_parser(command, _resolve(COMMANDS[command]))
    return frozenset(o for action in parser._actions for o in action.option_strings)


def _command_module_entries() -> list[tuple[str, tuple[str, tuple[str, ...]]]]:
    by_file: dict[str, list[str]] = {}
    for command, target in COMMANDS.items():
        module = target.split(":")[0]
        by_file.setdefault(module.replace(".", "/") + ".py", []).append(command)
    return [(path, ("ALL", tuple(cmds))) for path, cmds in by_file.items()]


def group_of(rel: str) -> tuple[str, tuple[str, ...]]:
    for path, group in _command_module_entries() + MODULES:
        if rel == path or (path.endswith("/") and rel.startswith(path)):
            return group
    raise AssertionError(f"{rel} is not mapped to the commands it serves: add it to MODULES in {__file__}")


# "lit-imgcls dataset pack", a command in backticks ("`predict`", "`dataset pack OUT ...`"), or "fit's"
_COMMAND_NAMES = "|".join(re.escape(c) for c in sorted(COMMANDS, key=len, reverse=True))
_MENTION = re.compile(rf"(?:(?:lit-imgcls\s+|`)({_COMMAND_NAMES})(?![\w-])|(?<![\w-])({_COMMAND_NAMES})'s\b)")
# A mention names the command of the flags after it up to the end of its clause: a line, a sentence (not "..."),
# a ";", the ")" of a parenthesis it sits in ("check the data (lit-imgcls dataset inspect) and --batch-size"), or
# a parenthesis opened after it ("made by `lit-imgcls dataset pack` (every sample of --split)").
_CLAUSE_END = re.compile(r"[\n;()]|(?<!\.)\.\s")


def named_command(text: str, at: int) -> str | None:
    """The command the text names before position ``at`` in the same clause, if any."""
    found = None
    for m in _MENTION.finditer(text, 0, at):
        found = m.group(1) or m.group(2)
        if _CLAUSE_END.search(text, m.end(), at):
            found = None
    return found


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def literal_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of ``path`` but its docstrings; an f-string as one text with holes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstring_nodes(tree)
    inside_fstrings = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                    inside_fstrings.add(id(value))
                else:
                    parts.append(HOLE)
            out.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                and id(node) not in inside_fstrings):
            out.append((node.lineno, node.value))
    return out


def problems_in(text: str, commands: tuple[str, ...], mode: str, allowed: set[str]) -> list[str]:
    found = []
    for m in FLAG.finditer(text):
        flag = m.group(0)
        if flag in allowed:
            continue
        named = named_command(text, m.start())
        if named is not None:
            if flag not in flags_of(named):
                found.append(f"{flag} (named for `{named}`, which has no such flag)")
            continue
        have = [c for c in commands if flag in flags_of(c)]
        if (mode == "ALL" and len(have) < len(commands)) or not have:
            lacking = [c for c in commands if c not in have]
            found.append(f"{flag} ({' and '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no such flag)")
    return found


def source_files() -> list[Path]:
    return sorted(p for folder in ("lit_imgcls", "tui") for p in (REPO / folder).rglob("*.py"))


def test_every_message_names_flags_of_the_command_that_prints_it():
    problems = []
    checked = 0
    for path in source_files():
        rel = path.relative_to(REPO).as_posix()
        mode, commands = group_of(rel)
        allowed = {flag for (where, flag) in ALLOWED if where == rel}
        for line, text in literal_texts(path):
            for problem in problems_in(text, commands, mode, allowed):
                problems.append(f"{rel}:{line}: {problem}: {' '.join(text.replace(HOLE, '{}').split())[:160]!r}")
            checked += len(FLAG.findall(text))
    assert checked > 50, f"only {checked} flags found: is the walk still reading the sources?"
    assert not problems, "messages name flags that do not exist:\n" + "\n".join(problems)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_names_only_flags_the_command_has(command):
    parser = build_parser(command, _resolve(COMMANDS[command]))
    # The texts --help shows, each whole (argparse wraps lines, which would cut a clause): the description, the
    # epilog and every flag's help.
    texts = [parser.description or "", parser.epilog or ""] + [a.help or "" for a in parser._actions]
    allowed = {flag for (where, flag) in ALLOWED_HELP if where == command}
    problems = [p for text in texts for p in problems_in(text, (command,), "ALL", allowed)]
    assert "--help" not in str(problems) and len(texts) > 2
    assert not problems, f"`lit-imgcls {command} --help` names flags that do not exist: {problems}"


def test_the_walk_sees_what_it_must():
    """The checker itself: a made-up flag is caught, a flag built at run time is not read as a flag, a flag named
    for another command is checked on that command, and ALL/ANY groups differ as documented."""
    assert problems_in("use --no-such-flag", ("fit",), "ALL", set())
    assert not problems_in(f"--no-{HOLE} turns it off", ("fit",), "ALL", set())
    assert not problems_in("re-pack with `lit-imgcls dataset pack ... --resize 64`", ("fit",), "ALL", set())
    assert problems_in("use `lit-imgcls dataset verify` --resize", ("fit",), "ALL", set())
    assert problems_in("give --checkpoint", ("predict", "fit"), "ALL", set())
    assert not problems_in("give --checkpoint", ("predict", "fit"), "ANY", set())
    assert not problems_in("`dataset pack` and `predict` take --max-pixels", ("fit",), "ANY", set())
    texts = dict((t, n) for n, t in literal_texts(REPO / "lit_imgcls" / "commands" / "predict.py"))
    assert any("--checkpoint" in t for t in texts)
