"""YAML configs with command-line overrides, validated by the pydantic models that define them."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.errors import DuetError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(model: type[ConfigT], path: Path | None, overrides: dict | None = None) -> ConfigT:
    """`overrides` use dotted keys (limits.max_calls) and replace what the file says."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise DuetError(f"cannot read config {path}: {error.__class__.__name__}; give a readable YAML file") from error
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
        raise DuetError(f"config key {where!r}: {first['msg']} (see {model.__name__} in the docs for the accepted keys)") from error


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
            raise DuetError(f"--set {pair!r}: the value is not valid YAML ({error.__class__.__name__})") from error
    return overrides
