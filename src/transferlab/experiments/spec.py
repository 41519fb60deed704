"""Reading YAML specs so that every mistake names its line: the part of a spec reader that any grid (compare,
multi-task, source assessment) shares.

``load_yaml`` keeps the line of every value; ``SpecReader`` turns a problem at a key path into a one-paragraph
``UserError`` that starts with ``spec.yaml:LINE: option``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import UserError


def _construct(node, path: tuple, lines: dict):
    """Plain Python data from a composed YAML node, recording the line of every value under its key path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[key] = _construct(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines) for i, v in enumerate(node.value)]
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def read_spec(spec, keys: tuple[str, ...], example: str) -> tuple[dict, dict, str]:
    """A spec given as a YAML path or as a dict (from Python): (data, lines, source); a dict has no lines, and its
    errors name "spec" instead of a file."""
    if isinstance(spec, dict):
        return spec, {}, "spec"
    data, lines = load_yaml(spec, keys, example)
    return data, lines, str(spec)


def load_yaml(path: str | Path, keys: tuple[str, ...], example: str) -> tuple[dict, dict]:
    """Read a YAML spec whose top level is a mapping (of ``keys``; ``example`` is the file to point users at).
    Returns (data, lines): ``lines[("task", "metric")]`` is the 1-based line of that entry."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec '{path}' does not exist. Pass a YAML file (see {example}).")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: the spec is not valid YAML ({getattr(e, 'problem', e)}). Check the indentation "
                        f"and the quoting on that line.") from None
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text; save the spec as UTF-8.") from None
    lines: dict = {}
    data = _construct(node, (), lines) if node is not None else None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the spec must be a YAML mapping with keys {', '.join(keys)} (see {example}).")
    return data, lines


class SpecReader:
    """Where a spec's values came from (``source`` and the line of every key path), for messages."""

    source: str
    lines: dict

    def _where(self, path: tuple) -> str:
        option = ".".join(str(p) for p in path) or "the spec"
        for k in range(len(path), -1, -1):
            if path[:k] in self.lines:
                return f"{self.source}:{self.lines[path[:k]]}: {option}"
        return f"{self.source}: {option}"

    def error(self, path: tuple, message: str) -> UserError:
        return UserError(f"{self._where(path)}: {message}")

    def _check_keys(self, d, path: tuple, allowed) -> None:
        if not isinstance(d, dict):
            raise self.error(path, f"expected a mapping with keys {', '.join(allowed)}, got {type(d).__name__}.")
        for k in d:
            if k not in allowed:
                raise self.error(path + (k,), f"unknown key '{k}'. Allowed here: {', '.join(allowed)}.")

    def _check_training_choice(self, path: tuple, key: str, value) -> None:
        """A training setting's named choice (``schedule``, ``augment``), checked here so a typo stops the spec."""
        if key == "schedule":
            from ..training.optim import SCHEDULES

            if value not in SCHEDULES:
                raise self.error(path, f"unknown schedule '{value}'; choose one of {', '.join(SCHEDULES)}.")
        elif key == "augment":
            from ..data.augment import augment_config

            try:
                augment_config(value)
            except UserError as e:
                raise self.error(path, str(e)) from None
