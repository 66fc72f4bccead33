"""The tool registry: which tools the requester may ask, each a name, a one-paragraph description and a kind.

- `coder`: the request goes to the coder model and its program runs in the sandbox (today's path, and the default
  registry, so a config or checkpoint from before tools existed runs unchanged, with the same prompt).
- `function`: a Python callable by import path (`my_pkg.tools:convert_units`) that takes the request text and returns
  text. The function is the user's trusted code; the request it receives is untrusted model output.
- `langchain`: a LangChain `BaseTool` by import path (an instance, or a function of no arguments that returns one),
  its name and description taken from the tool unless given: MCP servers' tools come through LangChain's MCP
  adapters this way.

A bare name in the registry list is a built-in: `coder`, or one of agents/tools/builtin.py (calculator, units, dates,
primes, roman). Import paths are resolved when the team is built, so a typo is a one-line error before any model loads.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.errors import DuetError, first_line
from agents.tools.builtin import BUILTIN

ToolKind = Literal["coder", "function", "langchain"]
Routing = Literal["lexical", "hidden"]
CODER_DESCRIPTION = (
    "Writes and runs a Python program for a computation described in plain words: counting letters or words, string "
    "work, lists, digits, any exact computation that no other tool does. For example "
    "<request>how many times the letter r appears in strawberry</request>."
)
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$"


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="what the requester writes in <request tool=\"NAME\">")
    kind: ToolKind = "function"
    target: str | None = Field(None, description="function and langchain: the import path, package.module:attribute")
    description: str | None = Field(None, description="the tool's card; unset: the function's docstring, the LangChain tool's description")
    timeout_s: float = Field(10.0, gt=0, description="function and langchain: seconds a call may take before it is answered with an error")

    @model_validator(mode="after")
    def _target_matches_kind(self) -> ToolSpec:
        if self.kind == "coder" and self.target:
            raise ValueError(f"tool {self.name!r} is a coder tool, which takes no target (the coder is the agent's coder model)")
        if self.kind != "coder" and not self.target:
            raise ValueError(f"tool {self.name!r} of kind {self.kind} needs a target: its import path, package.module:attribute")
        return self


def builtin_spec(name: str) -> ToolSpec:
    if name == "coder":
        return ToolSpec(name="coder", kind="coder")
    if name not in BUILTIN:
        raise ValueError(f"{name!r} is not a built-in tool (built-ins: {', '.join(['coder', *BUILTIN])}); "
                         "write a tool as {name, kind, target, description}")
    return ToolSpec(name=name, kind="function", target=f"agents.tools.builtin:{name}")


class ToolSettings(BaseModel):
    """`tools:` in an agent config: a list of tools (the short form), or these settings with the list as `registry`."""

    model_config = ConfigDict(extra="forbid")

    registry: list[ToolSpec] = Field(default_factory=lambda: [builtin_spec("coder")], description="the tools; a bare name is a built-in")
    default: str | None = Field(None, description="where a request without a tool name goes; unset: the first tool")
    routing: Routing = Field("lexical", description="how a tool name that is not in the registry is resolved: the nearest description by word overlap (lexical, BM25) or by the requester's hidden states (hidden; local models only)")
    max_output_chars: int = Field(2000, ge=100, description="longest reply of a function or LangChain tool; the rest is cut with a note")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"registry": value} if isinstance(value, list) else value

    @field_validator("registry", mode="before")
    @classmethod
    def _builtins(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [builtin_spec(entry) if isinstance(entry, str) else entry for entry in value]

    @model_validator(mode="after")
    def _names(self) -> ToolSettings:
        if not self.registry:
            raise ValueError("the registry is empty; list at least one tool (coder is today's default)")
        names = [tool.name for tool in self.registry]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two tools are named {twice[0]!r}; give each tool its own name")
        if self.default is not None and self.default not in names:
            raise ValueError(f"the default tool {self.default!r} is not in the registry ({', '.join(names)})")
        return self

    @property
    def default_name(self) -> str:
        return self.default or self.registry[0].name

    @property
    def is_plain(self) -> bool:
        """Only a coder: the requester's prompt shows no tool cards, exactly as before tools existed."""
        return len(self.registry) == 1 and self.registry[0].kind == "coder"


@dataclass(frozen=True)
class Tool:
    """A registry entry, resolved: `run` is the function (or LangChain tool) to call; None for the coder."""

    name: str
    kind: ToolKind
    description: str
    timeout_s: float
    run: Any = None


def load_tools(settings: ToolSettings) -> dict[str, Tool]:
    """The registry's tools by name, in order, with every import resolved. Raises DuetError in one line."""
    return {spec.name: _load(spec) for spec in settings.registry}


def _load(spec: ToolSpec) -> Tool:
    if spec.kind == "coder":
        return Tool(spec.name, "coder", spec.description or CODER_DESCRIPTION, spec.timeout_s)
    target = _imported(spec)
    if spec.kind == "langchain":
        from langchain_core.tools import BaseTool

        if not isinstance(target, BaseTool) and callable(target) and not inspect.signature(target).parameters:
            target = target()
        if not isinstance(target, BaseTool):
            raise DuetError(f"tool {spec.name!r}: {spec.target} is a {type(target).__name__}, not a LangChain BaseTool; use kind: function for a plain function")
        description = spec.description or target.description
    else:
        if not callable(target):
            raise DuetError(f"tool {spec.name!r}: {spec.target} is a {type(target).__name__}, not a function")
        description = spec.description or inspect.getdoc(target)
    if not description or not description.strip():
        raise DuetError(f"tool {spec.name!r} has no description (the requester chooses tools by it); give it a description: or a docstring")
    return Tool(spec.name, spec.kind, " ".join(description.split()), spec.timeout_s, target)


def _imported(spec: ToolSpec) -> Any:
    module_name, colon, attribute = spec.target.partition(":")
    if not colon or not module_name or not attribute:
        raise DuetError(f"tool {spec.name!r}: target {spec.target!r} is not an import path; write it as package.module:attribute")
    try:
        value = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - a user's module may fail to import in any way; say how, in one line
        raise DuetError(f"tool {spec.name!r}: cannot import {module_name} ({type(error).__name__}: {first_line(error)})") from error
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise DuetError(f"tool {spec.name!r}: {module_name} has no {attribute!r}; check the name after the colon in {spec.target!r}")
        value = getattr(value, part)
    return value
