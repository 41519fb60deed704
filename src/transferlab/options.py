"""Settings declared once: a dataclass field carries its type, default, unit, one-line help and allowed values, and
everything else reads them from there.

    steps: int | None = option(None, "optimizer steps to run", unit="steps", at_least=1)

``Settings.__post_init__`` validates every field against what its declaration says (type, range, choices) and then
calls ``check()`` for rules that tie several fields together; a value from a compare spec goes through the same
``check_value``, and ``cli_args.py`` generates the command-line options from the same fields. So the CLI, Python
(``PretrainConfig(steps=-5)``) and specs refuse a bad value with the same sentence, which names the option.

A subclass changes a default without restating the field (its type, help and range stay where they were declared):

    @dataclass(kw_only=True)
    class PretrainConfig(TrainSettings, defaults={"steps": 1000, "lr": 1e-3}):
        ...

This module imports nothing heavy: building the command line (``transferlab --help``) must stay fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields

from .errors import UserError


def option(default=MISSING, help: str = "", *, unit: str | None = None, at_least=None, above=None, at_most=None,
           below=None, choices: tuple | None = None, flag: str | None = None, negate: bool = False,
           default_text: str | None = None, metavar: str | None = None, parse=None, rule=None, cli: bool = True):
    """A dataclass field with what validation, messages and the command line need.

    Args:
        default: the default value (lists and dicts are copied per instance); leave it out for a required field.
        help: one line saying what the setting does (shown by --help and in every message about it).
        unit: what the number counts ("steps", "examples", "tokens"), shown next to the default.
        at_least / above / at_most / below: the allowed range of a number (inclusive / exclusive bounds).
        choices: the allowed values of a string (or of each element of a list).
        flag: the command-line name when it is not ``--field-name`` (e.g. "--quiet"); ``negate`` makes a bool
            flag store False (``--quiet`` turns ``progress`` off).
        default_text: how --help describes a default that is not a plain value ("the objective's own").
        metavar: the placeholder in --help (e.g. "H,W").
        parse: str -> value for values given as text (command line, specs), when the type alone does not say how.
        rule: value -> None, or the sentence saying what is wrong with it (a check ranges cannot express).
        cli: False keeps the field out of the command line (Python only).
    """
    metadata = {"help": help, "unit": unit, "at_least": at_least, "above": above, "at_most": at_most, "below": below,
                "choices": tuple(choices) if choices is not None else None, "flag": flag, "negate": negate,
                "default_text": default_text, "metavar": metavar, "parse": parse, "rule": rule, "cli": cli}
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata)
    return field(default=default, metadata=metadata)


def option_like(base: type, name: str, default=None, *, default_text: str) -> dataclasses.Field:
    """Field ``name`` of the settings class ``base`` with another default (None: chosen later, as ``default_text``
    says): a recipe that decides a setting itself redeclares it without restating its help, range or choices."""
    return _copy_field(field_of(base, name), default, default_text)


class SettingError(UserError):
    """A value a field does not allow. ``problem`` is the sentence without the option's name, for callers that name
    the place themselves (a spec's ``file:line: key``)."""

    def __init__(self, name: str, problem: str, message: str):
        super().__init__(message)
        self.name, self.problem = name, problem


def flag_of(f: dataclasses.Field) -> str:
    """The command-line name of a field: its ``flag``, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def describe(f: dataclasses.Field) -> str:
    """The help line of a field with its unit, for messages: "optimizer steps to run (steps)"."""
    text = f.metadata.get("help", "")
    unit = f.metadata.get("unit")
    return f"{text}, in {unit}" if text and unit and unit not in text else text


_HINTS: dict[type, dict] = {}


def type_hints(cls) -> dict:
    """The resolved annotations of a dataclass (its own and inherited), cached."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def field_of(cls, name: str) -> dataclasses.Field:
    found = {f.name: f for f in fields(cls)}
    if name not in found:
        raise UserError(f"{cls.__name__} has no setting '{name}'; its settings are {', '.join(sorted(found))}.")
    return found[name]


def _shape(annotation) -> tuple[object, bool]:
    """(the type without None, whether None is allowed) of ``X | None`` / ``Optional[X]`` / ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional
    return annotation, annotation is None or annotation is type(None)


def _shown(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _whole(value, from_text: bool):
    if isinstance(value, bool):
        raise ValueError("a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if from_text and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("a whole number")


def _number(value, from_text: bool) -> float:
    if isinstance(value, bool):
        raise ValueError("a number")
    if isinstance(value, (int, float)):
        value = float(value)
    elif from_text and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            value = float(value.strip())
        except ValueError:
            raise ValueError("a number") from None
    else:
        raise ValueError("a number")
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def coerce(annotation, value, from_text: bool = False):
    """``value`` as ``annotation`` says it must be, or ValueError(what was expected). ``from_text``: the value came
    from a command line or a spec, so "1e-4", "28,28" and "true" are read as what they spell."""
    typ, optional = _shape(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError(_what(annotation))
    # "none" spells "not given" for an optional number, tuple or list; for an optional text it stays the word
    # (augment's recipe "none" means no augmentation, not the default recipe)
    if (from_text and optional and typ is not str and isinstance(value, str)
            and value.strip().lower() in ("none", "null")):
        return None
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise ValueError("true or false")
    if typ is int:
        return _whole(value, from_text)
    if typ is float:
        return _number(value, from_text)
    if typ is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
        if from_text and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a spec's `label_col: 0` for a headerless file
        raise ValueError("text")
    if origin is list or typ is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError("a list")
        inner = args[0] if args else None
        return [coerce(inner, v, True) if inner is not None else v for v in value]
    if origin is tuple or typ is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if isinstance(value, (int, str)) and not isinstance(value, bool) and len(args) == 2 and args[1] is not ...:
            value = [value, value]  # one number for a square image: 28 -> (28, 28)
        if not isinstance(value, (list, tuple)):
            raise ValueError("a sequence")
        if args and args[-1] is ...:
            return tuple(coerce(args[0], v, from_text or isinstance(v, str)) for v in value)
        if args and len(value) == 1 and len(args) == 2:
            value = [value[0], value[0]]
        if args and len(value) != len(args):
            raise ValueError(_what(annotation))
        return tuple(coerce(a, v, from_text or isinstance(v, str)) for a, v in zip(args, value)) if args \
            else tuple(value)
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ValueError("a mapping")
        return value
    return value  # an annotation this module does not check (a callable, an object)


def _what(annotation) -> str:
    typ, _ = _shape(annotation)
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is int:
        return "a whole number"
    if typ is float:
        return "a number"
    if typ is bool:
        return "true or false"
    if typ is str:
        return "text"
    if origin is list:
        return "a list (comma-separated on the command line)"
    if origin is tuple:
        return f"{len(args)} whole numbers (e.g. 28,28)" if args and args[-1] is not ... else "a list of numbers"
    if origin is dict or typ is dict:
        return "a mapping"
    return "a value of another type"


def problem_with(f: dataclasses.Field, annotation, value, from_text: bool = False, ranges: bool = True):
    """(the checked value, None) or (None, the sentence saying what is wrong with it). ``ranges=False`` checks the
    type and the choices only (what the command-line parser checks; the config checks the rest)."""
    meta = f.metadata
    raw = value
    if value is None and not _shape(annotation)[1]:
        return None, f"is required: give {_what(annotation)}"
    if isinstance(value, str) and meta.get("parse") is not None and from_text:
        try:
            value = meta["parse"](value)
        except ValueError as e:
            return None, f"{_shown(raw)} is not allowed: {e}."
    try:
        value = coerce(annotation, value, from_text)
    except ValueError as e:
        return None, f"{_shown(raw)} is not {e}"
    if value is None:
        return None, None
    numbers = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else \
        [v for v in value if isinstance(v, (int, float))] if isinstance(value, tuple) else []
    low = ("[", meta["at_least"]) if meta.get("at_least") is not None else \
        ("(", meta["above"]) if meta.get("above") is not None else None
    high = ("]", meta["at_most"]) if meta.get("at_most") is not None else \
        (")", meta["below"]) if meta.get("below") is not None else None
    for v in numbers if ranges else []:
        bound = None
        outside = low is not None and (v < low[1] if low[0] == "[" else v <= low[1]) or \
            high is not None and (v > high[1] if high[0] == "]" else v >= high[1])
        if outside and low is not None and high is not None:  # an interval reads best as one: "in (0, 1)"
            bound = f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
        elif meta.get("at_least") is not None and v < meta["at_least"]:
            bound = f"at least {meta['at_least']}"
        elif meta.get("above") is not None and v <= meta["above"]:
            bound = f"above {meta['above']}"
        elif meta.get("at_most") is not None and v > meta["at_most"]:
            bound = f"at most {meta['at_most']}"
        elif meta.get("below") is not None and v >= meta["below"]:
            bound = f"below {meta['below']}"
        if bound is not None:
            return None, f"must be {bound}, got {_shown(value)}"
    if ranges and meta.get("rule") is not None and (problem := meta["rule"](value)) is not None:
        return None, problem
    choices = meta.get("choices")
    if choices:
        for v in value if isinstance(value, list) else [value]:
            if v not in choices:
                return None, f"unknown {f.name.replace('_', ' ')} {_shown(v)}; choose {', '.join(map(str, choices))}"
    return value, None


def check_value(cls, name: str, value, from_text: bool = False):
    """``value`` checked (and converted: "1e-4" -> 1e-4 with ``from_text``) as field ``name`` of ``cls`` declares
    it; a ``SettingError`` naming the option otherwise."""
    f = field_of(cls, name)
    checked, problem = problem_with(f, type_hints(cls)[name], value, from_text)
    if problem is not None:
        raise setting_error(f, problem)
    return checked


def setting_error(f: dataclasses.Field, problem: str) -> SettingError:
    """A ``SettingError`` for field ``f``: "--steps must be at least 1, got -5. --steps: optimizer
    steps to run." (``problem`` alone, without the option's name, is kept for callers that name the place)."""
    name = f.name if f.metadata.get("negate") else flag_of(f)  # "--quiet" would not name the field `progress`
    problem = problem.rstrip(".")
    unknown = f"unknown {f.name.replace('_', ' ')} "
    # "unknown pooling 'max'; choose ..." names the option itself: "unknown --pooling 'max'; choose ..."
    message = (f"unknown {name} {problem[len(unknown):]}" if problem.startswith(unknown) else f"{name} {problem}")
    about = describe(f)
    return SettingError(f.name, f"{problem}. {f.name}: {about}." if about else f"{problem}.",
                        f"{message}. {name}: {about}." if about else f"{message}.")


def _copy_field(base: dataclasses.Field, default, text: str | None = None):
    # A described default ("from --epochs") describes the base class's None, not a value a subclass sets; a subclass
    # that resolves its own None describes it itself (``text``).
    metadata = dict(base.metadata, default_text=text) if default is not None or text else base.metadata
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Settings:
    """Base of every settings dataclass: each field is validated from its declaration, then ``check()`` runs the
    rules that involve several fields. ``defaults={...}`` in a subclass's bases line changes inherited defaults;
    ``described={name: text}`` beside it says in --help what a default stands for (a None resolved in ``check()``,
    or a value that depends on what the command reads)."""

    def __init_subclass__(cls, defaults: dict | None = None, described: dict | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        defaults, described = defaults or {}, described or {}
        for name in {**defaults, **described}:
            base = next((c.__dataclass_fields__[name] for c in cls.__mro__[1:]
                         if name in getattr(c, "__dataclass_fields__", {})), None)
            if base is None:
                raise TypeError(f"{cls.__name__}: defaults names '{name}', which no base class declares")
            value = defaults[name] if name in defaults else \
                base.default_factory() if base.default_factory is not MISSING else base.default
            # Redeclared in the subclass, a field keeps its place in the order and (here) its metadata.
            cls.__annotations__ = {**cls.__dict__.get("__annotations__", {}), name: base.type}
            setattr(cls, name, _copy_field(base, value, described.get(name)))

    def __post_init__(self):
        hints = type_hints(type(self))
        for f in fields(self):
            value, problem = problem_with(f, hints[f.name], getattr(self, f.name))
            if problem is not None:
                raise setting_error(f, problem)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules that involve several fields; raise ``self.error(name, problem)``."""

    def error(self, name: str, problem: str) -> SettingError:
        return setting_error(field_of(type(self), name), problem)

    @classmethod
    def defaults(cls) -> dict:
        """Field name -> default value (required fields left out)."""
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    @classmethod
    def of(cls, settings: "Settings", **changes):
        """The ``cls`` part of ``settings`` (e.g. the training settings of a recipe config), with ``changes``."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{n: getattr(settings, n) for n in names if hasattr(settings, n)}, **changes})


def changed_settings(current: dict, saved: dict, defaults: dict, ignore) -> list[str]:
    """The settings that differ between a run being resumed (``saved``: its run.json) and the command that resumes
    it, as "name=saved value" strings. A setting that run.json lacks was added since the run started: it ran with
    ``defaults[name]``."""
    return [f"{k}={saved.get(k, defaults.get(k))!r}" for k, v in current.items()
            if k not in ignore and saved.get(k, defaults.get(k)) != _comparable(v)]


def _comparable(value):
    """JSON turns tuples into lists: compare what run.json holds with what it would hold."""
    return list(value) if isinstance(value, tuple) else value
