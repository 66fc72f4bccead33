"""What a training recipe needs on disk, checked with the recipe alone, before torch or a model is loaded: a missing
data file or checkpoint folder, or a tool that cannot be imported, is one line in a second, not a traceback after
minutes of loading.

Relative paths in a recipe are read from the current folder (where `duet` runs), as every other path duet takes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from agents.errors import DuetError
from agents.tools.registry import load_tools
from training.config import GRPORunConfig, SFTRunConfig
from training.data import DataSource

RECIPE_SECTIONS = {"sft": "duet sft", "grpo": "duet train"}


def check_recipe(config: GRPORunConfig | SFTRunConfig, recipe: Path | None = None) -> None:
    """Raise a DuetError naming the first input the run would not find, and the command that makes it."""
    sampled = not isinstance(config, SFTRunConfig) or config.traces.file is None  # SFT from a traces file reads no data
    if sampled:
        for index, source in enumerate(config.data.train):
            check_data(source, f"data.train[{index}]", recipe)
    if isinstance(config, SFTRunConfig):
        for key in ("file", "demonstrations"):
            path = getattr(config.traces, key)
            if path is not None and not path.is_file():
                made_by = _command_writing(path, recipe)
                fix = f"make it first: {made_by}" if made_by else f"give a JSONL of {'pairs' if config.role == 'coder' else 'traces'}, or leave traces.{key} out"
                raise DuetError(f"traces.{key}: no file at {path}{_relative(path)}; {fix}")
        if config.role == "coder":  # the one model it loads; no requester, teacher or tool runs
            check_model(config.model.coder, "model.coder", recipe)
            return
        specs = {"model.requester": config.model.requester, "model.coder": config.model.coder, "traces.teacher": config.traces.teacher}
    else:
        specs = {"model.requester": config.model.requester, "model.coder": config.model.coder}
    for key, spec in specs.items():
        if spec is not None:
            check_model(spec, key, recipe)
    load_tools(config.agent.tools)


def check_data(source: DataSource, key: str, recipe: Path | None = None) -> None:
    path = Path(source.path).expanduser()
    if not source.is_file or path.is_file():
        return  # a folder or hub id is checked by the datasets library when it loads
    made_by = _command_writing(path, recipe)
    fix = f"make it first: {made_by}" if made_by else "make it with duet data make or duet data convert --out, or fix the path"
    raise DuetError(f"{key}: no data file at {source.path}{_relative(path)}; {fix}")


def check_model(spec: str, key: str, recipe: Path | None = None) -> None:
    """A model spec parses without loading anything; a missing checkpoint folder says which recipe writes it."""
    from agents.models import parse_spec

    try:
        parse_spec(spec)
    except DuetError as error:
        path = Path(spec).expanduser()
        if path.exists() or not (path.name.startswith("checkpoint") or spec.startswith((".", "/", "~")) or spec.count("/") > 1):
            raise DuetError(f"{key}: {error}") from error
        writer = _recipe_writing(path, recipe)
        if writer is not None:
            command, recipe_path = writer
            raise DuetError(f"{key}: {spec} does not exist yet{_relative(path)}; run {command} {recipe_path} first, which writes it") from error
        raise DuetError(
            f"{key}: {spec} does not exist{_relative(path)}; a checkpoint is written by duet sft or duet train into its "
            "output_dir as checkpoint-latest: run that recipe first, or give an existing folder, a hub id or default"
        ) from error


def _relative(path: Path) -> str:
    return "" if path.is_absolute() else f" (relative to the current folder, {Path.cwd()})"


def _siblings(recipe: Path | None) -> list[Path]:
    return sorted(recipe.parent.glob("*.yaml")) if recipe is not None and recipe.parent.is_dir() else []


def _recipe_writing(checkpoint: Path, recipe: Path | None) -> tuple[str, Path] | None:
    """The recipe beside this one whose output_dir holds `checkpoint` (OUTPUT_DIR/checkpoint-latest)."""
    for candidate in _siblings(recipe):
        try:
            data = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        for section, command in RECIPE_SECTIONS.items():
            output = (data.get(section) or {}).get("output_dir") if isinstance(data, dict) and isinstance(data.get(section), dict) else None
            if output is not None and _same(Path(str(output)), checkpoint.parent):
                return command, candidate
    return None


def _command_writing(data: Path, recipe: Path | None) -> str | None:
    """A `duet data ... --out PATH` command in the comments of the recipes beside this one (they say how to make
    their data)."""
    for candidate in _siblings(recipe):
        try:
            lines = candidate.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            command = line.lstrip("# \t").strip()
            words = command.split()
            if command.startswith("duet data ") and "--out" in words[:-1] and _same(Path(words[words.index("--out") + 1]), data):
                return command
    return None


def _same(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()
