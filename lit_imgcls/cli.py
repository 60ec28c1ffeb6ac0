"""``lit-imgcls COMMAND``: each command is one typed function; its signature makes the flags, its docstring the help.

A parameter typed as a dataclass (the Recipe) becomes one flag per field, readable from a YAML file with
``--recipe FILE`` (alias ``--config``); flags on the command line override the file. Flags take MXNet's dashed
spelling (``--lr-factor``) and the recipe's underscored one (``--lr_factor``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import inspect
import os
import sys
import typing
from typing import Any, Callable

import docstring_parser

from lit_imgcls.bounded_read import ReadRefused, read_text
from lit_imgcls.errors import DuplicateNameError, RunFailed, RunStopped, UsageError, quoted

PROG = "lit-imgcls"

COMMANDS: dict[str, str] = {
    "fit": "lit_imgcls.commands.fit:fit",
    "validate": "lit_imgcls.commands.validate:validate",
    "test": "lit_imgcls.commands.test:test",
    "predict": "lit_imgcls.commands.predict:predict",
    "score": "lit_imgcls.commands.score:score",
    "export": "lit_imgcls.commands.export:export",
    "list": "lit_imgcls.commands.list_plugins:list_plugins",
    "dataset pack": "lit_imgcls.commands.dataset_pack:pack",
    "dataset inspect": "lit_imgcls.commands.dataset_inspect:inspect_pack",
    "dataset verify": "lit_imgcls.commands.dataset_verify:verify",
    "dataset photos": "lit_imgcls.commands.dataset_photos:photos",
    "benchmark io": "lit_imgcls.commands.benchmark_io:benchmark_io",
    "benchmark train": "lit_imgcls.commands.benchmark_train:benchmark_train",
    "benchmark infer": "lit_imgcls.commands.benchmark_infer:benchmark_infer",
    "plot": "lit_imgcls.commands.plot:plot",
    "launch": "lit_imgcls.commands.launch:launch",
    "tui": "lit_imgcls.commands.tui:tui",
}

# MXNet's flags switch the LR schedule by being given: --lr-factor-epoch means step decay, --lr-step-epochs
# multistep, even when the recipe names another schedule.
_SCHEDULE_FLAGS = {"lr_factor_epoch": "step", "lr_step_epochs": "multistep"}
# --lr-factor alone decayed every epoch in MXNet's older scripts (--lr-factor-epoch defaulted to 1): given alone
# against a schedule that never multiplies by lr_factor (constant, cosine, onecycle), it means that step decay.
_FACTOR_ALONE_EPOCHS = 1.0


def _drop_other_schedules_keys(recipe: Any, given: set[str]) -> None:
    """A schedule chosen on the command line drops the recipe file's keys of another schedule, with a note (the
    recipe's own conflicting keys are refused by ``validate``: a key that would be silently ignored)."""
    from lit_imgcls.schedules import keys_read

    schedule = recipe.schedule()
    for key, read in keys_read(schedule).items():
        value = getattr(recipe, key)
        if value and not read and key not in given:
            print(f"{PROG}: note: {key} {value!r} from the recipe is dropped: lr_schedule {schedule} does not read it",
                  file=sys.stderr)
            setattr(recipe, key, 0.0 if key == "warmup_epochs" else None)


def _resolve(target: str) -> Callable[..., Any]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _doc_params(obj: Any) -> tuple[str, dict[str, str]]:
    doc = docstring_parser.parse(inspect.getdoc(obj) or "")
    text = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
    return text, {p.arg_name: " ".join((p.description or "").split()) for p in doc.params}


def _flags(name: str, short: str | None = None) -> list[str]:
    """A parameter's or recipe key's flags: ``--lr-factor``, ``--lr_factor``, and its other spellings
    (:data:`lit_imgcls.recipe.FLAG_ALIASES`: ``--num-epoch`` for ``num_epochs``)."""
    from lit_imgcls.recipe import FLAG_ALIASES

    dashed = "--" + name.replace("_", "-")
    return ([short] if short else []) + ([dashed] if dashed == f"--{name}" else [dashed, f"--{name}"]) + \
        list(FLAG_ALIASES.get(name, ()))


def _short_flags(func: Callable[..., Any]) -> dict[str, str]:
    """Short flags a command declares as ``Annotated[type, "-n"]``: parameter -> "-n"."""
    shorts = {}
    for pname, hint in typing.get_type_hints(func, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, str) and meta.startswith("-") and not meta.startswith("--"):
                shorts[pname] = meta
    return shorts


def _trailing_param(func: Callable[..., Any]) -> str | None:
    """A required ``list[str]`` parameter takes every word after ``--`` (a command to run, say), unparsed."""
    hints = typing.get_type_hints(func)
    for pname, param in inspect.signature(func).parameters.items():
        if param.default is inspect.Parameter.empty and hints[pname] == list[str]:
            return pname
    return None


def _recipe_type(func: Callable[..., Any]) -> tuple[str, type] | None:
    for pname, hint in typing.get_type_hints(func).items():
        if dataclasses.is_dataclass(hint):
            return pname, hint
    return None


def build_parser(command: str, func: Callable[..., Any]):
    """An ArgumentParser for ``func``: flags from its parameters (a dataclass parameter is flattened)."""
    import argparse

    from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Keeps the docstring's line breaks in the description."""

    description, params = _doc_params(func)
    # No abbreviations: ``--rec FILE`` would read a recipe past _check_recipe_files, which looks for the full flag.
    # print_config=None: --print-recipe is the one way to print a recipe (jsonargparse's --print_config would
    # print another document, unresolved, beside it in --help).
    parser = ArgumentParser(prog=f"{PROG} {command}", description=description, exit_on_error=False,
                            formatter_class=Formatter, allow_abbrev=False, print_config=None)
    hints = typing.get_type_hints(func)
    shorts = _short_flags(func)
    trailing = _trailing_param(func)
    for pname, param in inspect.signature(func).parameters.items():
        hint = hints[pname]
        if pname == trailing:
            parser.epilog = f"{pname.upper()} ...: {params.get(pname, '')}"
            continue
        if dataclasses.is_dataclass(hint):
            parser.add_argument("--recipe", "--config", action=ActionConfigFile,
                                help="YAML recipe file, or a shipped recipe's name (lit-imgcls list recipes); later "
                                     "flags override its keys.")
            parser.add_argument("--print-recipe", "--print_recipe", dest="print_recipe", action="store_true",
                                help="Print the resolved recipe as YAML and exit.")
            field_docs = _doc_params(hint)[1]
            group = parser.add_argument_group(f"{hint.__name__} keys (YAML key = flag without dashes)")
            for f in dataclasses.fields(hint):
                ftype = typing.get_type_hints(hint)[f.name]
                # A field marked as a switch (score's --calibrate) is on when given alone; true/false still parse.
                switch = {"nargs": "?", "const": True} if f.metadata.get("switch") else {}
                group.add_argument(*_flags(f.name), dest=f.name, type=ftype, default=f.default,
                                   help=field_docs.get(f.name, ""), **switch)
        elif param.default is inspect.Parameter.empty:
            # A required Sequence[str] takes one or more words (``plot RUN_DIR...``); list[str] is the -- tail above.
            many = {"nargs": "+", "type": str} if typing.get_origin(hint) is collections.abc.Sequence else {"type": hint}
            parser.add_argument(pname, help=params.get(pname, ""), **many)
        elif str in typing.get_args(hint) or list[str] in typing.get_args(hint) or hint == list[str]:
            if list[str] in typing.get_args(hint) or hint == list[str]:
                # Repeating the flag adds to the list, unless there is a default list to replace.
                extend = {"action": "extend"} if param.default is None else {}
                parser.add_argument(*_flags(pname, shorts.get(pname)), dest=pname, type=str, nargs="+",
                                    default=param.default, help=params.get(pname, "") + " (one or more)", **extend)
            else:
                parser.add_argument(*_flags(pname, shorts.get(pname)), dest=pname, type=hint, default=param.default,
                                    help=params.get(pname, ""))
        elif hint is bool:
            # A switch, as im2rec had: --recursive turns on, --no-shuffle turns off.
            if param.default:
                parser.add_argument(f"--no-{pname.replace('_', '-')}", dest=pname, action="store_false", default=True,
                                    help=params.get(pname, ""))
            else:
                parser.add_argument(*_flags(pname), dest=pname, action="store_true", default=False, help=params.get(pname, ""))
        else:
            parser.add_argument(*_flags(pname, shorts.get(pname)), dest=pname, type=hint, default=param.default,
                                help=params.get(pname, ""))
    if trailing:
        parser.usage = parser.format_usage().split(":", 1)[1].strip() + f" -- {trailing.upper()} ..."
    return parser


def _shipped_recipes(argv: list[str]) -> list[str]:
    """``argv`` with each ``--recipe NAME`` (a bare name that is no file here) replaced by that shipped recipe's
    path, so the checks and the parser read the file: ``--recipe mnist`` is recipes/mnist.yaml, wherever
    lit-imgcls is installed."""
    from lit_imgcls.shipped import resolve_recipe_arg

    out = list(argv)
    for i, arg in enumerate(out):
        if len(arg) > _MAX_STRING:  # left to _check_recipe_files's message on over-long arguments
            continue
        if arg in ("--recipe", "--config") and i + 1 < len(out) and len(out[i + 1]) <= _MAX_STRING:
            out[i + 1] = resolve_recipe_arg(out[i + 1])
        elif arg.startswith(("--recipe=", "--config=")):
            flag, value = arg.split("=", 1)
            out[i] = f"{flag}={resolve_recipe_arg(value)}"
    return out


def _check_recipe_files(argv: list[str], recipe_cls: type,
                        command_only: collections.abc.Set[str] = frozenset()) -> list[tuple[str, dict]]:
    """Unknown keys and unreadable files in a recipe get a clearer message than the parser's.

    Returns:
        each recipe file given, in order, with the keys it holds: (path, mapping).

    Args:
        argv: the command's arguments.
        recipe_cls: the recipe dataclass, whose fields are the valid keys.
        command_only: the command's own parameters (``allow_any_class``): the parser would take them from a file
            too, but a switch that grants permissions must come from the person typing the command.
    """
    import yaml

    known = {f.name for f in dataclasses.fields(recipe_cls)}
    files: list[tuple[str, dict]] = []
    for i, arg in enumerate(argv):
        path = None
        if arg in ("--recipe", "--config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(("--recipe=", "--config=")):
            path = arg.split("=", 1)[1]
        if len(arg) > _MAX_STRING + 64:  # a value, not a flag; before the parser copies it around
            raise UsageError(f"argument {i + 1} has {len(arg):,} characters ({quoted(arg)}): recipe values are at most "
                             f"{_MAX_STRING} characters")
        if path is None:
            continue
        if not os.path.lexists(path):
            from lit_imgcls.shipped import missing_file_hint

            raise UsageError(f"recipe file not found: {path}{missing_file_hint(path)}")
        try:  # a regular file of at most 1 MiB (a FIFO would block, /dev/zero would never end), then YAML
            data = yaml.safe_load(read_text(path, "recipe"))
        except ReadRefused as exc:
            raise UsageError(f"cannot read recipe {path}: {exc.reason}") from None
        except RecursionError:
            raise UsageError(f"cannot read recipe {path}: it nests deeper than YAML can be read") from None
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read recipe {path}: {' '.join(str(exc).split())}") from None
        except Exception as exc:  # PyYAML's constructors fail on some scalars with bare errors (`!!int _`: IndexError,
            # `!!bool x`: KeyError, an integer of over 4300 digits: ValueError): the file is not a readable recipe
            raise UsageError(f"cannot read recipe {path}: not valid YAML ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())})") from None
        if data is None or data == {}:  # jsonargparse would say only "Unexpected config"
            raise UsageError(f"recipe {path} holds no keys (it is empty or only comments); a recipe is a mapping of "
                             "keys to values, such as `network: lenet`")
        if not isinstance(data, dict):
            raise UsageError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
        problem = _shape_problem(data)
        if problem:
            raise UsageError(f"recipe {path} {problem}")
        for key in data:
            if key in command_only:
                flag = "--" + key.replace("_", "-")
                raise UsageError(f"{key} in recipe {path} is refused: it can only be given on the command line ({flag}), "
                                 "so that a recipe file cannot grant it to itself")
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"unknown recipe key {quoted(key)} in {path}{hint} valid keys: {', '.join(sorted(known))}")
        files.append((path, data))
    return files


_MAX_DEPTH = 50
_MAX_VALUES = 100_000
_MAX_STRING = 4096  # characters in one recipe string (PATH_MAX on Linux): longer is a mistake or an attack


class _Shape(Exception):
    """What is wrong with a recipe document's shape (internal to _shape_problem)."""


def _shape_problem(data: Any) -> str | None:
    """Why a loaded YAML document cannot be a recipe however its keys look, or None.

    YAML aliases let a few lines stand for a structure that refers to itself, or for billions of values (each
    alias level multiplies); the parser and ``dataclasses.asdict`` would recurse into it or copy it all. Sizes are
    counted once per distinct node, so the check itself stays cheap.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if isinstance(node, str) and len(node) > _MAX_STRING:
            raise _Shape(f"has a string of {len(node):,} characters ({quoted(node)}); recipe strings are at most "
                         f"{_MAX_STRING}")
        if not isinstance(node, (dict, list)):
            return 1
        if isinstance(node, dict):
            for k in node:
                size(k, depth + 1)
        if depth > _MAX_DEPTH:
            raise _Shape(f"nests deeper than {_MAX_DEPTH} levels")
        key = id(node)
        if key in on_path:
            raise _Shape("contains itself (a YAML alias inside its own anchor)")
        if key not in sizes:
            on_path.add(key)
            sizes[key] = 1 + sum(size(v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
            on_path.discard(key)
            if sizes[key] > _MAX_VALUES:
                raise _Shape(f"expands to more than {_MAX_VALUES:,} values (YAML aliases of aliases)")
        return sizes[key]

    try:
        size(data, 0)
    except _Shape as exc:
        return str(exc)
    return None


def _describe(hint: Any) -> str:
    """What a value of type ``hint`` looks like, in words for an error message: ``one of sgd, adamw``, ``a whole
    number or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        text = " or ".join(_describe(a) for a in args if a is not type(None))
        return text + (" or null" if type(None) in args else "")
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (list, collections.abc.Sequence):
        if args and typing.get_origin(args[0]) is dict:
            return "a list of mappings"
        if args and args[0] is Any:
            return "a list"
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping of keys to values"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _parser_error(exc: BaseException, command: str, parser: Any, rest: list[str], hints: dict[str, Any],
                  files: list[tuple[str, dict]]) -> UsageError:
    """jsonargparse's refusal as what the value should be, in lit-imgcls's words.

    Its own wording names Python types (``Does not validate against any of the Union subtypes``, ``Expected a
    typing.Literal[...]``); the user needs the key, where its value came from (the flag, or the recipe file), the
    value, and what is valid. An unknown flag gets the closest flags, as an unknown recipe key gets the closest keys.
    """
    import re

    text = _one_line(exc)
    flags = sorted(o for o in parser._option_string_actions if o.startswith("--"))
    dests = {opt: action.dest for opt, action in parser._option_string_actions.items()}
    unknown = re.match(r"unrecognized arguments: (.*)$", text)
    if unknown:
        words = unknown.group(1).split()
        flag = next((w.split("=", 1)[0] for w in words if w.startswith("-")), None)
        if flag is None:
            return UsageError(f"{command}: unexpected argument {quoted(words[0]) if words else ''}: "
                              f"`{PROG} {command} --help` lists what it takes")
        close = []  # one spelling per flag: --lr-schedule, not also --lr_schedule
        for match in difflib.get_close_matches(flag, flags, n=6):
            if dests[match] not in {dests[c] for c in close}:
                close.append(match)
        close = close[:3]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return UsageError(f"{command}: unknown flag {quoted(flag)}{hint} (`{PROG} {command} --help` lists them)")
    keyed = re.match(r'Parser key "([^"]+)":', text)
    if not keyed or keyed.group(1) not in hints:
        return UsageError(f"{command}: {text}")
    key = keyed.group(1)
    found = re.search(r"(?:Got|Given) value: (.*?)$", text)
    value: Any = found.group(1) if found else None
    typed = [a.split("=", 1)[0] for a in rest if dests.get(a.split("=", 1)[0]) == key]
    if typed:
        where = typed[-1]
    else:
        # a positional argument (``list KIND``) has no flag: its name as --help writes it
        where = key if key in dests.values() else f"{command} {key.upper()}"
        for path, data in reversed(files):  # the last file that sets the key is the one the parser read it from
            if key in data:
                where, value = f"{key} in recipe {path}", data[key]
                break
    want = _describe(hints[key])
    hint = ""
    if typing.get_origin(hints[key]) is typing.Literal or any(typing.get_origin(a) is typing.Literal
                                                               for a in typing.get_args(hints[key])):
        choices = [str(c) for a in (hints[key], *typing.get_args(hints[key])) for c in typing.get_args(a)
                   if typing.get_origin(a) is typing.Literal]
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
    got = f", got {quoted(value)}" if value is not None else ""
    return UsageError(f"{where} must be {want}{got}{hint}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for long, short in (("<class 'float'>", "float"), ("<class 'int'>", "int"), ("<class 'str'>", "str"), ("<class 'bool'>", "bool")):
        text = text.replace(long, short)
    return text


def _overview() -> str:
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for a command's options)", "", "commands:"]
    width = max(len(name) for name in COMMANDS)
    for name, target in COMMANDS.items():
        module, func = target.split(":")
        doc = _doc_first_line(module, func)
        lines.append(f"  {name:<{width}}  {doc}")
    return "\n".join(lines)


def _doc_first_line(module: str, func: str) -> str:
    return (inspect.getdoc(_resolve(f"{module}:{func}")) or "").splitlines()[0]


def run(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return
    if argv[0] in ("-V", "--version"):
        from lit_imgcls import __version__

        print(f"{PROG} {__version__}")
        return
    command, rest = argv[0], argv[1:]
    groups = {name.split()[0] for name in COMMANDS if " " in name}
    if command in groups:
        subs = [name.split()[1] for name in COMMANDS if name.startswith(command + " ")]
        if not rest or rest[0] in ("-h", "--help"):
            print(f"usage: {PROG} {command} {{{','.join(subs)}}} ...\n")
            for sub in subs:
                print(f"  {sub:<10} {_doc_first_line(*COMMANDS[f'{command} {sub}'].split(':'))}")
            return
        command, rest = f"{command} {rest[0]}", rest[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown command {command!r}{hint} commands: {', '.join(COMMANDS)}")
    func = _resolve(COMMANDS[command])
    params = inspect.signature(func).parameters
    recipe_param = _recipe_type(func)
    files: list[tuple[str, dict]] = []
    if recipe_param:
        rest = _shipped_recipes(rest)
        files = _check_recipe_files(rest, recipe_param[1], {p for p in params if p != recipe_param[0]})
    trailing = _trailing_param(func)
    tail: list[str] = []
    if trailing and "--" in rest:
        rest, tail = rest[:rest.index("--")], rest[rest.index("--") + 1:]
    parser = build_parser(command, func)
    from jsonargparse import ArgumentError

    try:
        ns = parser.parse_args(rest)
    except ArgumentError as exc:
        hints = typing.get_type_hints(func, include_extras=True)
        if recipe_param:
            hints.update(typing.get_type_hints(recipe_param[1]))
        error = _parser_error(exc, command, parser, rest, hints, files)
        if trailing and not tail:
            error = UsageError(f"{error} ({trailing.upper()} goes after --)")
        raise error from None
    values = ns.as_dict()
    if recipe_param:
        pname, cls = recipe_param
        fields = {f.name for f in dataclasses.fields(cls)}
        recipe = cls(**{k: v for k, v in values.items() if k in fields})
        # The keys given on the command line, whichever of their spellings was used.
        dests = {opt: action.dest for opt, action in parser._option_string_actions.items()}
        given = {dests[a.split("=", 1)[0]] for a in rest if a.split("=", 1)[0] in dests}
        if "lr_factor" in given and not given & {"lr_schedule", *_SCHEDULE_FLAGS} and hasattr(recipe, "schedule") \
                and recipe.schedule() not in ("step", "multistep"):
            print(f"{PROG}: note: --lr-factor given alone, so lr_schedule is step with lr_factor_epoch "
                  f"{_FACTOR_ALONE_EPOCHS:g}, as in MXNet's tutorial (the recipe said {recipe.schedule()})", file=sys.stderr)
            recipe.lr_schedule, recipe.lr_factor_epoch = "step", _FACTOR_ALONE_EPOCHS
            given |= {"lr_schedule", "lr_factor_epoch"}
        if "lr_schedule" not in given:
            for key, schedule in _SCHEDULE_FLAGS.items():
                if key in given and getattr(recipe, "lr_schedule", None) not in (None, schedule):
                    print(f"{PROG}: note: --{key.replace('_', '-')} given, so lr_schedule is {schedule} "
                          f"(the recipe said {recipe.lr_schedule})", file=sys.stderr)
                    recipe.lr_schedule = schedule
        if given & {"lr_schedule", *_SCHEDULE_FLAGS} and hasattr(recipe, "schedule"):
            _drop_other_schedules_keys(recipe, given)
        if values.get("print_recipe"):
            from lit_imgcls.recipe import Recipe, check_scalars, expand_paths, resolve_spellings, validate

            if isinstance(recipe, Recipe):
                # The run's own checks and resolution (paths expanded, --dtype float16 as precision 16-mixed), but
                # not what this machine holds (files, plugins): a recipe may be printed for another machine.
                try:
                    validate(recipe, allow_any_class=bool(values.get("allow_any_class")), here=False)
                except UsageError as exc:  # as a run's refusal: naming the recipe file that set the key
                    raise _from_recipe_file(exc, given, files) from None
                recipe.lr_schedule = recipe.schedule()  # the schedule the run uses, not null
            else:  # score's overrides: a key left unset comes from the checkpoint, so there is less to check
                check_scalars(recipe)  # what YAML cannot print (an integer of over 4300 digits) gets its one line
                expand_paths(recipe)  # the paths the run would use
                resolve_spellings(recipe)
            print(recipe.to_yaml(), end="")
            return
        # The command's own flags (fit's allow_any_class) go beside the recipe. The recipe file's flag shares the
        # recipe parameter's name, so that value (the file paths) is replaced by the recipe.
        kwargs = {k: v for k, v in values.items() if k in params and k != pname}
        kwargs[pname] = recipe
        try:
            func(**kwargs)
        except UsageError as exc:
            raise _from_recipe_file(exc, given, files) from None
        return
    kwargs = {k: v for k, v in values.items() if k in params}
    if trailing:
        kwargs[trailing] = tail
    func(**kwargs)


def _from_recipe_file(exc: UsageError, given: set[str], files: list[tuple[str, dict]]) -> UsageError:
    """``exc`` naming the recipe file its key's value came from (``batch_size must be positive, got -3 (key
    batch_size of recipe my.yaml)``): a key not given on the command line and set by a recipe file."""
    key = getattr(exc, "key", None)
    if not key or key in given:
        return exc
    for path, data in reversed(files):
        if key in data:
            named = UsageError(f"{exc} (key {key} of recipe {path})", key=key)
            return named
    return exc


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lit-imgcls`` console script; returns the exit code."""
    from lit_imgcls.printable import printable

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except (UsageError, DuplicateNameError) as exc:
        # One line whatever the message quotes (a key or a path from a recipe may hold line breaks).
        print(f"{PROG}: error: {printable(' '.join(str(exc).split()))}", file=sys.stderr)
        return 2
    except RunStopped as exc:
        print(f"{PROG}: {printable(exc)}", file=sys.stderr, flush=True)
        return exc.exit_code
    except RunFailed as exc:
        print(f"{PROG}: error: {printable(exc)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # A broken process group can block in its destructors at exit; nothing is left to save.
        os._exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
    try:
        sys.stdout.flush()  # what is still buffered may meet a closed pipe too
    except BrokenPipeError:
        return _reader_gone()
    return 0


def _reader_gone() -> int:
    """The program reading our output stopped (``lit-imgcls list networks | head -1``): not this command's fault,
    and no traceback. Exit as a Unix tool killed by SIGPIPE does (128 + 13); stdout goes to /dev/null, so Python's
    own flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13
