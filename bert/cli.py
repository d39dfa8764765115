"""The command line of every command that takes a config file: bert.pretrain, bert.finetune,
bert.prepare, bert.demo and the benchmarks (benchmarks.step, benchmarks.data_prep).

    python -m bert.<command> --config FILE.py[:ARG] [--config.key=value ...] [--print_config]

FILE.py defines `get_config()` (given ARG when there is one). Every leaf key can be set with
`--config.key=value`, parsed as the type of its value in the file: `true`/`false` for booleans
(a bare `--config.key` is true), and for a key whose value is derived until set (a
`config_dict.placeholder(type)`, e.g. config.model.num_heads) a value of that type or `None`.
An unknown key, a value of the wrong type or one the command's `validate` rejects ends the
command with one line, `bert.<command>: error: ...`, and exit status 2, before any work starts.
`--print_config` prints every key, its value after the overrides and its meaning (the comment
beside its default), and exits.

An entry point calls `define_config_flags()` before `app.run(main, flags_parser=parse_flags)`,
and `config_from_flags(...)` in main. Nothing here defines flags at import. `command` names it
in messages: "pretrain" for bert.pretrain, or a whole module name ("benchmarks.step") for a
command outside the package.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import os
import re
import sys
import textwrap
import tokenize
from typing import Any, Callable, Mapping, NamedTuple, NoReturn, Sequence

from absl import app, flags
from ml_collections import ConfigDict, FieldReference

from bert import allocator, distributed
from bert.metrics import setup_logging

Validate = Callable[[ConfigDict], None]

# --config.key=value or a bare --config.key; the value may be empty or hold "=" and newlines.
_OVERRIDE = re.compile(r"--?config\.(?P<key>[^=]*)(?:=(?P<value>.*))?", re.DOTALL)
# The line of a defaults function that sets a key: `c.data.mask_prob = 0.15  # meaning`.
_ASSIGNMENT = re.compile(r"\s*\w+\.(?P<key>[\w.]+)\s*=(?!=)")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             tuple: "a tuple such as (1, 2)", list: "a list such as [1, 2]"}


class UsageError(ValueError):
    """A config file, key or value the command cannot use; the message names it."""


class Leaf(NamedTuple):
    value: Any
    kind: type  # what a new value must be: the placeholder's type while its value is None
    nullable: bool  # None is allowed: a placeholder, whose value is derived while it is None


def define_config_flags() -> None:
    """--config and --print_config, for an entry point (a library module defines no flags)."""
    flags.DEFINE_string("config", None, "experiment config file, FILE.py or FILE.py:ARG; set "
                        "any of its keys with --config.KEY=VALUE")
    flags.DEFINE_boolean("print_config", False, "print every config key with its value after "
                         "the overrides and its meaning, then exit")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for `app.run(main, flags_parser=parse_flags)`.

    absl stops at flags it does not define, so the --config.key=value overrides go around it:
    main's argv is absl's (the program and positional arguments) followed by the overrides.
    """
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    overrides = [arg for arg in argv[1:] if _OVERRIDE.fullmatch(arg)]
    others = [arg for arg in argv if arg not in overrides]
    return app.parse_flags_with_usage(others) + overrides


def config_from_flags(command: str, argv: Sequence[str], validate: Validate,
                      documented_by: Callable[[], ConfigDict]) -> ConfigDict:
    """`config_from_command_line` with --config, --print_config and main's argv (parse_flags)."""
    overrides = [arg for arg in argv[1:] if _OVERRIDE.fullmatch(arg)]
    return config_from_command_line(command, flags.FLAGS.config, overrides, validate,
                                    documented_by, print_config=flags.FLAGS.print_config)


def define_run_flags(workdir_help: str) -> None:
    """--config, --print_config, --workdir and the multi-host flags of a training command."""
    define_config_flags()
    flags.DEFINE_string("workdir", None, workdir_help)
    distributed.define_flags()


def run_command(command: str, argv: Sequence[str], validate: Validate,
                documented_by: Callable[[], ConfigDict],
                run: Callable[[ConfigDict, str], Any]) -> None:
    """main() of a training command: the config from the command line, the host allocator and
    JAX's distributed runtime set up (before anything touches a device), then `run(config,
    workdir)`. Bad config, data, paths or checkpoints, or a non-finite step with
    on_nonfinite='stop', end in one line naming what is wrong: a traceback would only bury it."""
    setup_logging()
    # A bad key or value stops here, with exit status 2; --print_config stops here too.
    config = config_from_flags(command, argv, validate, documented_by)
    if not flags.FLAGS.workdir:
        usage_error(command, "--workdir is required")
    try:
        # XLA's threads take their malloc arenas when they start.
        allocator.configure(config.get("host_allocator", "auto"))
        distributed.initialize_from_flags()
        run(config, flags.FLAGS.workdir)
    except (ValueError, OSError, FloatingPointError) as error:
        raise SystemExit(f"{program(command)}: error: {error}") from None


def config_from_command_line(command: str, path: str | None, overrides: Sequence[str],
                             validate: Validate, documented_by: Callable[[], ConfigDict], *,
                             print_config: bool = False) -> ConfigDict:
    """The config of the file `path` with `overrides` ("--config.key=value") applied, validated.

    A mistake prints one line, `bert.<command>: error: ...`, and exits with status 2.
    `print_config` prints `describe(...)` with the meanings of the keys set in `documented_by`
    (the function building the defaults) and exits 0, before validation: a config still missing
    a value it needs (say, its training files) can be looked at.
    """
    try:
        if not path:
            raise UsageError("--config is required: the experiment config file")
        config = load_config(path, overrides)
        if print_config:
            print(describe(config, key_meanings(documented_by)))
            raise SystemExit(0)
        validate(config)
    except ValueError as error:
        usage_error(command, str(error))
    return config


def program(command: str) -> str:
    """The module a command runs as: bert.<command>, or `command` when it is a module name."""
    return command if "." in command else f"bert.{command}"


def usage_error(command: str, message: str) -> NoReturn:
    """Print `bert.<command>: error: <message>` as one line to stderr and exit with status 2."""
    print(f"{program(command)}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    raise SystemExit(2)


def load_config(path: str, overrides: Sequence[str] = ()) -> ConfigDict:
    """`get_config()` of FILE.py (`get_config(ARG)` for "FILE.py:ARG"), locked, with the
    overrides ("--config.key=value") applied in order. Raises UsageError naming the mistake."""
    config = _run_config_file(path)
    config.lock()
    for arg in overrides:
        match = _OVERRIDE.fullmatch(arg)
        if match is None:
            raise UsageError(f"{arg!r} is not a config override: write --config.KEY=VALUE")
        key, text = match["key"], match["value"]
        known = leaves(config)
        if key not in known:
            raise UsageError(_unknown_key(key, list(known)))
        *parents, name = key.split(".")
        section = config
        for parent in parents:
            section = section[parent]
        section[name] = _parse(key, text, known[key])
    return config


def leaves(config: ConfigDict, prefix: str = "") -> dict[str, Leaf]:
    """Every leaf of `config` by its dotted key ("model.num_heads")."""
    found: dict[str, Leaf] = {}
    for name, value in config.items(preserve_field_references=True):
        key = prefix + name
        if isinstance(value, ConfigDict):
            found.update(leaves(value, key + "."))
        elif isinstance(value, FieldReference):
            found[key] = Leaf(value.get(), value.get_type(), True)
        else:
            found[key] = Leaf(value, type(value), value is None)
    return found


def key_meanings(documented_by: Callable[..., Any]) -> dict[str, str]:
    """Each key's meaning, in the order `documented_by` sets them: the comment on the line that
    sets it, continued by comment lines right below whose text starts in the same column."""
    source = textwrap.dedent(inspect.getsource(documented_by))
    meanings: dict[str, str] = {}
    key, column, last_row = None, -1, -1
    for token in tokenize.generate_tokens(iter(source.splitlines(keepends=True)).__next__):
        if token.type != tokenize.COMMENT:
            continue
        row, start = token.start
        text = token.string[1:]
        text_column = start + 1 + len(text) - len(text.lstrip())
        assignment = _ASSIGNMENT.match(token.line[:start])
        if assignment:
            key, column = assignment["key"], text_column
            meanings[key] = text.strip()
        elif (key and not token.line[:start].strip() and row == last_row + 1
              and text_column == column):
            meanings[key] += " " + text.strip()
        else:
            key = None
        last_row = row
    return meanings


def describe(config: ConfigDict, meanings: Mapping[str, str]) -> str:
    """One line per leaf, `config.key  value  # meaning`, in the order of `meanings`."""
    order = {key: position for position, key in enumerate(meanings)}
    keys = sorted(leaves(config).items(), key=lambda item: order.get(item[0], len(order)))
    rows = [(f"config.{key}", repr(leaf.value), meanings.get(key, "(undocumented)"))
            for key, leaf in keys]
    key_width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    return "\n".join(f"{key:<{key_width}}  {value:<{value_width}}  # {meaning}"
                     for key, value, meaning in rows)


def _run_config_file(path: str) -> ConfigDict:
    file, *args = path.split(":", 1)
    if not os.path.isfile(file):
        raise UsageError(f"config file {file} does not exist")
    spec = importlib.util.spec_from_file_location("experiment_config", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UsageError(f"{file}:{error.lineno}: {error.msg}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UsageError(f"{file} defines no get_config()")
    parameters = inspect.signature(get_config).parameters
    try:
        inspect.signature(get_config).bind(*args)
    except TypeError:
        raise UsageError(f"{path}: get_config({', '.join(parameters)}) cannot take "
                         f"{', '.join(map(repr, args)) or 'no argument'}") from None
    try:
        config = get_config(*args)
    except ValueError as error:
        raise UsageError(f"{path}: {error}") from None
    if not isinstance(config, ConfigDict):
        raise UsageError(f"{path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def _unknown_key(key: str, known: list[str]) -> str:
    """The message for a key not in the config: the nearest known keys, or its keys when it
    names a section."""
    inside = [k for k in known if k.startswith(key + ".")]
    if inside:
        return (f"config.{key} is a section, not a key: set its keys, e.g. "
                + ", ".join(f"config.{k}" for k in inside[:3]))
    name = key.rsplit(".", 1)[-1]
    same_name = [k for k in known if k.rsplit(".", 1)[-1] == name]  # right name, wrong section
    # The closest spellings, and those nearly as close: "data.packng" is data.packing, and
    # data.masking (a little further) would only distract.
    score = {k: difflib.SequenceMatcher(None, key, k).ratio() for k in known}
    best = max(score.values(), default=0.0)
    close = sorted((k for k in known if score[k] >= max(0.6, best - 0.1)), key=score.get,
                   reverse=True)
    nearest = list(dict.fromkeys(same_name + close))[:3]
    hint = (f"did you mean {' or '.join(f'config.{k}' for k in nearest)}?" if nearest
            else "none is close; --print_config lists every key")
    return f"unknown config key config.{key} ({hint})"


def _parse(key: str, text: str | None, leaf: Leaf) -> Any:
    """`text` as a value for `leaf`, or UsageError naming the key, the value and what it takes."""
    if leaf.nullable and text in ("None", "none"):
        return None
    if text is None:  # a bare --config.key
        if leaf.kind is bool:
            return True
        raise UsageError(f"--config.{key} needs a value: --config.{key}=VALUE")
    try:
        if leaf.kind is bool:
            return _BOOLEANS[text.lower()]
        if leaf.kind is int:
            return _parse_int(text)
        if leaf.kind is float:
            return float(text)
        if leaf.kind is str:
            return text
        if leaf.kind in (tuple, list):
            value = ast.literal_eval(text)
            if not isinstance(value, (tuple, list)):
                raise ValueError(text)
            return leaf.kind(value)
    except (KeyError, ValueError, SyntaxError):
        expected = _EXPECTED[leaf.kind] + (" or None" if leaf.nullable else "")
        raise UsageError(f"config.{key}={text}: expected {expected}") from None
    if leaf.kind is type(None):  # None with no declared type: any Python literal, else text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise UsageError(f"config.{key} holds a {leaf.kind.__name__}, which the command line "
                     "cannot set")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        number = float(text)  # 1e4 is an integer too; 1.5 is not
        if not number.is_integer():
            raise
        return int(number)
