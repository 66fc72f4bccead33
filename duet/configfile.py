"""YAML configs with command-line overrides, validated by the pydantic models that define them."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.errors import DuetError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(model: type[ConfigT], path: Path | None, overrides: dict | None = None, flags: dict[str, str] | None = None) -> ConfigT:
    """`overrides` use dotted keys (limits.max_calls) and replace what the file says. `flags` says how the user typed
    an override (`--max-calls -1`, `--set grpo.beta=lots`), so an error about it names what was typed, not the key."""
    data: dict = {}
    if path is not None:
        data = load_yaml(path, "config") or {}
        if not isinstance(data, dict):
            raise DuetError(f"config {path} must be a YAML mapping of settings")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise DuetError(f"config key {dotted!r}: {key!r} is a value, not a section")
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        given = [key for key in flags or {} if where == key or where.startswith(key + ".")]
        typed = flags[max(given, key=len)] if given else None  # the override the error is in, as the user typed it
        if first["type"] == "extra_forbidden":
            parents, leaf = first["loc"][:-1], str(first["loc"][-1])
            keys = keys_at(model, parents)
            near = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
            prefix = "".join(f"{part}." for part in parents)
            hint = f"did you mean {prefix}{near[0]}?" if near else f"the keys{' under ' + prefix.rstrip('.') if prefix else ''} are: {', '.join(keys)}"
            raise DuetError(f"{typed + ': ' if typed else ''}{where!r} is not a setting{_in_file(path, typed)}; {hint}") from error
        if typed is not None:
            raise DuetError(f"{typed}: {first['msg']}") from error
        if not where:  # a rule across sections: the whole recipe is where it is
            raise DuetError(f"config{_in_file(path, typed)}: {first['msg'].removeprefix('Value error, ')}") from error
        raise DuetError(f"config key {where!r}{_in_file(path, typed)}: {first['msg']}") from error


def load_yaml(path: Path, what: str):
    """A YAML file's content; a one-line DuetError naming the file and the parser's problem."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DuetError(f"cannot read {what} {path}: {error.strerror or error}; give a readable YAML file") from error
    except yaml.YAMLError as error:
        raise DuetError(f"{what} {path} is not valid YAML: {_yaml_problem(error)}") from error


def _in_file(path: Path | None, typed: str | None) -> str:
    return f" in {path}" if path is not None and typed is None else ""


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The parser's own words and the 1-based line, e.g. `mapping values are not allowed here (line 3)`."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} (line {mark.line + 1})" if mark is not None else problem


def keys_at(model: type[BaseModel], parents: tuple) -> list[str]:
    """The setting names of the section at `parents` (a pydantic error location), or [] when it is not a section."""
    current: type | None = model
    for part in parents:
        if isinstance(part, int) or current is None or part not in current.model_fields:
            continue  # a list index, or a tag pydantic adds for a union member
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `LoraSettings | None` or `list[DataSource]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def parse_overrides(pairs: list[str]) -> dict:
    """`--set grpo.beta=0.01 --set data.train=[a.jsonl]`: values are read as YAML, so numbers, booleans and lists
    keep their types."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DuetError(f"--set {pair!r}: write KEY=VALUE with a dotted key, e.g. --set grpo.beta=0.01")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise DuetError(f"--set {pair!r}: the value is not valid YAML ({_yaml_problem(error)}); quote it or fix it") from error
    return overrides
