"""build_graph: the one compiled graph that `duet ask`, `duet chat`, `duet eval` and training rollouts all run.

    START -> start -> requester --request for a coder tool--> coder -> executor --failed, repairs left--> coder
                       ^ ^ |  |                                          ^    |
                       | | |  +--program (inline mode)-------------------+    |
                       | | +--request for a function or LangChain tool--> tool
                       | +------------------result------------------------+   |
                       +------------------------result----------------------- +
    requester --answer / no answer / limit / error--> finish -> END
    coder --failed (the coder's backend raised)--> finish

A request names its tool (`<request tool="units">`; none: the registry's default, which is the coder unless the
config says otherwise); the requester node resolves the name against the registry, and the edge after it routes by
the tool's kind.

The inline mode is a route through this graph, not a graph of its own: its requester writes the program, so the
call reaches the executor with its program already attached and the coder node is never visited.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from pydantic import ValidationError

from agents.backends.base import Backend
from agents.coder import Coder
from agents.errors import DuetError
from agents.protocol import Mode
from agents.models import load_backend, parse_spec, trained_settings
from agents.requester import Requester
from agents.sandbox import Sandbox
from agents.tools.registry import load_tools
from agents.tools.toolbox import Toolbox
from graph.config import REMEMBERED, AgentConfig
from graph.nodes import guarded, make_coder_node, make_executor_node, make_finish_node, make_requester_node, make_start_node, make_tool_node
from graph.state import AgentState, QuestionInput


def build_graph(requester: Requester, coder: Coder | None, sandbox: Sandbox, config: AgentConfig, checkpointer=None, toolbox: Toolbox | None = None):
    """`coder=None` runs the requester alone: its requests, for every tool, are answered with a notice instead of a
    result. `toolbox`: the registry's tools (unset: loaded from `config.tools`)."""
    toolbox = toolbox or Toolbox(config.tools, requester.backend)
    requester = requester.with_tool_cards(toolbox.cards())
    graph = StateGraph(AgentState, input_schema=QuestionInput)
    graph.add_node("start", make_start_node(config))
    graph.add_node("requester", guarded(make_requester_node(requester, toolbox, config)))
    graph.add_node("coder", guarded(make_coder_node(coder, config)))
    graph.add_node("executor", guarded(make_executor_node(sandbox, requester, config)))
    graph.add_node("tool", guarded(make_tool_node(toolbox, requester, with_tools=coder is not None)))
    graph.add_node("finish", make_finish_node(requester))
    graph.add_edge(START, "start")
    graph.add_edge("start", "requester")
    graph.add_conditional_edges("requester", router_after_requester(toolbox), ["coder", "executor", "tool", "finish"])
    graph.add_conditional_edges("coder", after_coder, ["executor", "finish"])
    graph.add_conditional_edges("executor", after_executor, ["coder", "requester", "finish"])
    graph.add_conditional_edges("tool", after_tool, ["requester", "finish"])
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer)


def router_after_requester(toolbox: Toolbox):
    def after_requester(state: AgentState) -> str:
        if state.status != "running":
            return "finish"
        call = state.calls[-1]
        if call.attempts:  # the inline mode's own program
            return "executor"
        return "coder" if toolbox.tools[call.tool].kind == "coder" else "tool"

    return after_requester


def after_tool(state: AgentState) -> str:
    return "requester" if state.status == "running" else "finish"


def after_coder(state: AgentState) -> str:
    """A coder that failed (a dead server, an HTTP 500) ends the question with its own error: there is no new
    program to run, and running the previous one again would answer the request with a stale result."""
    return "executor" if state.status == "running" else "finish"


def after_executor(state: AgentState) -> str:
    if state.status != "running":
        return "finish"
    return "requester" if state.calls[-1].inserted is not None else "coder"


def as_trained(config: AgentConfig, requester_spec: str) -> AgentConfig:
    """The settings a run uses with this requester: every setting that a duet checkpoint remembers (its few-shot
    examples, mode, segment length and limits: `REMEMBERED`) as it was trained, unless the user set it (in a config
    file, with a flag or `--set`, or in code: pydantic's `model_fields_set`; a `few_shot` or `mode` of null counts as
    unset); everything else as given. The only place where "as the checkpoint was trained" is decided: `Team` calls
    it when it is built, and training and evaluation call it where they need the settings before a team exists.
    Idempotent: what it fills in counts as set, so resolving the result again for the same model changes nothing;
    for another model (an SFT teacher sampling for its student) it fills only what the first left unset."""
    remembered = trained_settings(requester_spec)
    changes = {}
    for section, keys in REMEMBERED.items():
        given = getattr(config, section)
        values = remembered.get(section, {})
        unset = {key: values[key] for key in keys if values.get(key) is not None and (key not in given.model_fields_set or getattr(given, key) is None)}
        if unset:
            try:
                changes[section] = type(given).model_validate({**given.model_dump(exclude_unset=True), **unset})
            except ValidationError as error:
                first = error.errors()[0]
                raise DuetError(f"{requester_spec}: its duet.json holds a bad {section}.{'.'.join(map(str, first['loc']))} ({first['msg']}); "
                                "set that value yourself, or fix the file") from error
    return config.model_copy(update=changes) if changes else config


class Team:
    """The loaded parts of an agent. One backend is shared when requester and coder name the same model, so their
    calls batch together and the weights are loaded once."""

    def __init__(
        self, requester_spec: str, coder_spec: str, config: AgentConfig | None = None, requester_backend: Backend | None = None, load_coder: bool | None = None
    ):
        """The coder is loaded when `load_coder` says so, by default when the requester writes in the request mode
        (the inline mode needs none). `requester_backend` is a backend that is already running the requester
        (training's policy): it is used as it is, and never shared with the coder, which stays a frozen model of its
        own even under the same spec."""
        self.config = as_trained(config or AgentConfig(), requester_spec)
        settings = self.config.requester
        if load_coder is None:
            load_coder = settings.filled().mode == "request"
        self.requester_spec, self.coder_spec = requester_spec, coder_spec if load_coder else None
        load_tools(self.config.tools)  # a tool that cannot be imported fails now, before any model loads
        self._backends: dict[str, Backend] = {}
        specs = {s for s in (self.coder_spec, None if requester_backend else requester_spec) if s is not None}
        # parse all, then reach servers before loading weights, so a typo or a dead server fails in a second
        for spec in sorted(specs, key=lambda s: parse_spec(s).kind != "openai"):
            self.backend(spec)
        self.requester = Requester(requester_backend or self.backend(requester_spec), settings)
        self.coder = None if self.coder_spec is None else Coder(self.backend(self.coder_spec), self.config.coder)
        self.sandbox = Sandbox(self.config.sandbox)
        self.toolbox = Toolbox(self.config.tools, self.requester.backend)
        self.requester = self.requester.with_tool_cards(self.toolbox.cards())

    def backend(self, spec: str) -> Backend:
        parsed = parse_spec(spec)
        key = parsed.model_dump_json()
        if key not in self._backends:
            self._backends[key] = load_backend(parsed, **self.config.backends.options_for(parsed.kind))
        return self._backends[key]

    def swap_coder(self, spec: str) -> None:
        self.coder = Coder(self.backend(spec), self.config.coder)
        self.coder_spec = spec

    def graph(self, checkpointer=None, with_coder: bool = True, mode: Mode | None = None):
        """The graph in the requester's mode (or `mode`); `with_coder=False` runs a requester in the request mode
        alone, its requests answered with a notice."""
        requester = self.requester.in_mode(mode or self.requester.mode)
        if requester.mode == "request" and with_coder and self.coder is None:
            raise DuetError("the request mode needs a coder, and none was loaded; load one, or use --mode inline")
        return build_graph(requester, self.coder if with_coder else None, self.sandbox, self.config, checkpointer, self.toolbox)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        await self.sandbox.aclose()
