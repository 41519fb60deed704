"""The command line generated from the settings dataclasses (litgpt builds its parser from signatures; here the
fields of ``options.Settings`` classes carry type, default, unit, help and allowed values).

``add_settings(parser, PretrainConfig)`` adds one option per field: ``--batch-size N`` from ``batch_size: int``,
``--header/--no-header`` from a bool, ``--text-cols A,B`` from a list, ``--image-size H,W`` from a pair, a choice
list from the field's ``choices``; the help shows the default (and the unit). ``settings_from(PretrainConfig, args)``
builds the config back, so a value is validated once, by the dataclass, from the command line as from Python.
Adding an option is adding a field.

``Parser`` is the argparse parser every subcommand uses: every help line shows its default, and a mistake is one
``error: ...`` paragraph (exit status 2), like every other user mistake.
"""

from __future__ import annotations

import argparse
import re
import typing
from dataclasses import MISSING, fields

from .options import _shape, flag_of, problem_with, setting_error, type_hints


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (when it has one worth showing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "[default:" in text or action.default in (None, False, argparse.SUPPRESS) \
                or not action.option_strings or isinstance(action, argparse._HelpAction):
            return text
        if isinstance(action.default, (list, tuple)):
            return f"{text} [default: {','.join(map(str, action.default))}]".strip().replace("%", "%%")
        return f"{text} [default: %(default)s]".strip()


class Parser(argparse.ArgumentParser):
    """argparse with defaults in every help line and one-paragraph errors."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        default = kwargs.get("default")
        if "help" not in kwargs and args and str(args[0]).startswith("-") and default not in (None, False):
            # argparse writes no help line for an option without help text: this one still shows its default
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
            kwargs["help"] = f"[default: {shown}]"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        # A settings message names its option itself: drop argparse's "argument --steps: " before it.
        message = re.sub(r"^argument (--[\w-]+)(/--[\w-]+)?: (?=(unknown )?\1 )", "", message)
        self.exit(2, f"error: {self.prog}: {message.rstrip('.')}. See `{self.prog} --help`.\n")


def _help(f, default) -> str:
    meta = f.metadata
    text = meta.get("help", "")
    if meta.get("negate"):
        return text
    if meta.get("default_text"):
        shown = meta["default_text"]
    elif default is MISSING:
        return text
    elif isinstance(default, bool):
        return text  # --x / --no-x: the default is shown by argparse's own "(default: ...)" below
    elif default is None:
        return text
    elif isinstance(default, (list, tuple)):
        shown = ",".join(map(str, default))
    else:
        shown = str(default) + (f" {meta['unit']}" if meta.get("unit") else "")
    return f"{text} [default: {shown}]".replace("%", "%%")


def _converter(cls, f, annotation):
    """str -> checked value, or an argparse error that says what is wrong (range, choices, type)."""

    def convert(text: str):
        # Type and choices here (argparse's usual exit 2); ranges and rules across fields when the config is built.
        value, problem = problem_with(f, annotation, text, from_text=True, ranges=False)
        if problem is not None:  # the sentence Python gives for the same value
            raise argparse.ArgumentTypeError(str(setting_error(f, problem)).rstrip("."))
        return value

    convert.__name__ = f.name  # argparse names the converter in some messages
    return convert


def add_settings(parser: argparse.ArgumentParser, cls, *, skip=(), required=(), title: str | None = None) -> None:
    """One option per field of ``cls`` (a ``Settings`` dataclass), grouped in --help by the class that declares it.

    Args:
        skip: fields left off this command line (set by the command itself).
        required: fields the command line requires although they have a default in Python (e.g. ``out``).
        title: the group title for ``cls``'s own fields (default: its docstring's first line).
    """
    hints = type_hints(cls)
    owned = [(next(c for c in reversed(cls.__mro__) if f.name in getattr(c, "__annotations__", {})), f)
             for f in fields(cls) if f.name not in skip and f.metadata.get("cli", True)]
    # The command's own options first, then those it inherits (training settings, reading options).
    owned.sort(key=lambda pair: cls.__mro__.index(pair[0]))
    groups: dict[type, argparse._ArgumentGroup] = {}
    for owner, f in owned:
        if owner not in groups:
            heading = (title if owner is cls and title else owner.__dict__.get("section")
                       or (owner.__doc__ or owner.__name__).strip().splitlines()[0].rstrip("."))
            groups[owner] = parser.add_argument_group(heading)
        group = groups[owner]
        default = f.default if f.default is not MISSING else \
            (f.default_factory() if f.default_factory is not MISSING else MISSING)
        annotation = hints[f.name]
        typ, _ = _shape(annotation)
        meta = f.metadata
        # Defaults stay the dataclass's: an option not given is not passed, so the config applies its own.
        kw = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f, default)}
        if typ is bool:
            if meta.get("negate"):
                group.add_argument(flag_of(f), action="store_false", **kw)
            else:
                kw["help"] = f"{kw['help']} [default: {'--' if default else '--no-'}{f.name.replace('_', '-')}]"
                group.add_argument(flag_of(f), action=argparse.BooleanOptionalAction, **kw)
            continue
        if meta.get("choices"):
            kw["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
        elif meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        elif typing.get_origin(typ) is list:
            kw["metavar"] = "A,B"
        else:
            kw["metavar"] = {int: "N", float: "X"}.get(typ, f.name.upper())
        kw["required"] = default is MISSING or f.name in required
        group.add_argument(flag_of(f), type=_converter(cls, f, annotation), **kw)


def settings_from(cls, args: argparse.Namespace, **more):
    """``cls`` built from the options ``add_settings`` added (those given; the others keep their defaults) and
    ``more``; the dataclass validates the whole."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **more})


def command_line(argv: list[str], add: dict[str, str] = (), drop=()) -> str:
    """The command that was run, with options added or replaced (``{"--resume": "auto"}``) and flags dropped
    (``("--overwrite",)``), quoted for a shell: what an interrupted run prints for the user to run next."""
    import shlex

    out, skip_next = [], False
    add = dict(add)
    for i, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop:
            continue
        if name in add:
            skip_next = "=" not in arg
            continue
        out.append(arg)
    for name, value in add.items():
        out += [name, value]
    return shlex.join(["transferlab", *out])
