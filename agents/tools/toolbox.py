"""The registry at run time: its tools loaded, a request's tool resolved, the cards the requester's prompt shows."""

from __future__ import annotations

from agents.backends.base import Backend
from agents.tools.calling import ToolOutcome, call_tool
from agents.tools.registry import Tool, ToolSettings, load_tools
from agents.tools.routing import make_router
from prompts import load_text


class Toolbox:
    def __init__(self, settings: ToolSettings, backend: Backend | None = None):
        """`backend`: the requester's, whose hidden states `routing: hidden` embeds with."""
        self.settings = settings
        self.tools = load_tools(settings)
        self.default = self.tools[settings.default_name]
        self.router = make_router(list(self.tools.values()), settings.routing, backend)

    async def resolve(self, name: str | None, request: str) -> tuple[Tool, str | None]:
        """The tool a request names (the default when it names none), and the problem to record when the name is not
        in the registry and the nearest description chose instead."""
        if name is None:
            return self.default, None
        if name in self.tools:
            return self.tools[name], None
        by_case = {tool_name.lower(): tool for tool_name, tool in self.tools.items()}
        if name.lower() in by_case:
            return by_case[name.lower()], None
        tool = await self.router.nearest(request, name)
        return tool, f"no tool named {name!r}; the request went to {tool.name}, the nearest description"

    async def call(self, tool: Tool, request: str) -> ToolOutcome:
        return await call_tool(tool, request, self.settings.max_output_chars)

    def cards(self) -> str | None:
        """The tool cards for the requester's system prompt; None for the plain registry (the coder alone), whose
        prompt is exactly the one from before tools existed."""
        if self.settings.is_plain:
            return None
        cards = "\n".join(f"- {tool.name}: {tool.description}" for tool in self.tools.values())
        return load_text("tool_cards").format(default=self.default.name, cards=cards)
