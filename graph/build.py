"""build_graph: the one compiled graph that `duet ask`, `duet chat`, `duet eval` and training rollouts all run.

    START -> requester --request--> coder -> executor --failed, repairs left--> coder
                 ^                               |
                 +-------------result------------+
    requester --answer / no answer / limit / error--> finish -> END
    coder --failed (the coder's backend raised)--> finish
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from agents.backends.base import Backend
from agents.coder import Coder
from agents.models import load_backend, parse_spec, trained_requester_settings
from agents.requester import Requester
from agents.sandbox import Sandbox
from graph.config import AgentConfig
from graph.nodes import guarded, make_coder_node, make_executor_node, make_finish_node, make_requester_node
from graph.state import AgentState


def build_graph(requester: Requester, coder: Coder | None, sandbox: Sandbox, config: AgentConfig, checkpointer=None):
    """`coder=None` runs the requester alone: its requests are answered with a notice instead of a program."""
    graph = StateGraph(AgentState)
    graph.add_node("requester", guarded(make_requester_node(requester, config)))
    graph.add_node("coder", guarded(make_coder_node(coder, config)))
    graph.add_node("executor", guarded(make_executor_node(sandbox, requester, config)))
    graph.add_node("finish", make_finish_node(requester))
    graph.add_edge(START, "requester")
    graph.add_conditional_edges("requester", after_requester, ["coder", "finish"])
    graph.add_conditional_edges("coder", after_coder, ["executor", "finish"])
    graph.add_conditional_edges("executor", after_executor, ["coder", "requester", "finish"])
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer)


def after_requester(state: AgentState) -> str:
    return "coder" if state.status == "running" else "finish"


def after_coder(state: AgentState) -> str:
    """A coder that failed (a dead server, an HTTP 500) ends the question with its own error: there is no new
    program to run, and running the previous one again would answer the request with a stale result."""
    return "executor" if state.status == "running" else "finish"


def after_executor(state: AgentState) -> str:
    if state.status != "running":
        return "finish"
    return "requester" if state.calls[-1].inserted is not None else "coder"


class Team:
    """The loaded parts of an agent. One backend is shared when requester and coder name the same model, so their
    calls batch together and the weights are loaded once."""

    def __init__(self, requester_spec: str, coder_spec: str, config: AgentConfig | None = None, requester_backend: Backend | None = None):
        """`requester_backend` is a backend that is already running the requester (training's policy): it is used as
        it is, and never shared with the coder, which stays a frozen model of its own even under the same spec."""
        self.config = config or AgentConfig()
        self.requester_spec, self.coder_spec = requester_spec, coder_spec
        self._backends: dict[str, Backend] = {}
        # parse both, then reach servers before loading weights, so a typo or a dead server fails in a second
        for spec in sorted({coder_spec} if requester_backend else {requester_spec, coder_spec}, key=lambda s: parse_spec(s).kind != "openai"):
            self.backend(spec)
        trained = trained_requester_settings(requester_spec)
        unset = {key: value for key, value in trained.items() if getattr(self.config.requester, key, None) is None}
        backend = requester_backend or self.backend(requester_spec)
        self.requester = Requester(backend, self.config.requester.model_copy(update=unset))
        self.coder = Coder(self.backend(coder_spec), self.config.coder)
        self.sandbox = Sandbox(self.config.sandbox)

    def backend(self, spec: str) -> Backend:
        parsed = parse_spec(spec)
        key = parsed.model_dump_json()
        if key not in self._backends:
            self._backends[key] = load_backend(parsed, **self.config.backends.options_for(parsed.kind))
        return self._backends[key]

    def swap_coder(self, spec: str) -> None:
        self.coder = Coder(self.backend(spec), self.config.coder)
        self.coder_spec = spec

    def graph(self, checkpointer=None, with_coder: bool = True):
        return build_graph(self.requester, self.coder if with_coder else None, self.sandbox, self.config, checkpointer)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        await self.sandbox.aclose()
