"""Prompts as files, loaded by name, so they can be read and edited without touching code."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

PROMPTS_DIR = Path(__file__).parent


@cache
def load_text(name: str) -> str:
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


@cache
def load_examples(name: str) -> tuple[dict[str, str], ...]:
    return tuple(yaml.safe_load((PROMPTS_DIR / f"{name}.yaml").read_text(encoding="utf-8")))
