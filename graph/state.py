"""The graph state: everything one question's run produces, typed, and token-exact for training."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agents.sandbox import ExecutionResult

SegmentSource = Literal["prompt", "requester", "inserted"]
Status = Literal["running", "answered", "no_answer", "limit", "error"]


class Segment(BaseModel):
    """A run of token ids with one source. Requester segments keep the log-probabilities they were sampled with."""

    source: SegmentSource
    token_ids: list[int]
    text: str
    logprobs: list[float] | None = None


class Trajectory(BaseModel):
    """The requester's context as token ids, in order. Training reads `token_ids` and `loss_mask` directly."""

    segments: list[Segment] = Field(default_factory=list)

    def appended(self, segment: Segment) -> Trajectory:
        return Trajectory(segments=[*self.segments, segment])

    @property
    def token_ids(self) -> list[int]:
        return [token for segment in self.segments for token in segment.token_ids]

    @property
    def loss_mask(self) -> list[int]:
        """1 on exactly the tokens the requester generated; 0 on the prompt and on inserted tool results."""
        return [int(segment.source == "requester") for segment in self.segments for _ in segment.token_ids]

    @property
    def transcript(self) -> str:
        return "".join(segment.text for segment in self.segments)

    def count(self, *sources: SegmentSource) -> int:
        return sum(len(segment.token_ids) for segment in self.segments if segment.source in sources)

    def count_segments(self, source: SegmentSource) -> int:
        return sum(segment.source == source for segment in self.segments)


class CodeAttempt(BaseModel):
    """One program the coder wrote for a request, and what running it gave."""

    reply: str
    code: str | None
    result: ExecutionResult | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


class Call(BaseModel):
    """One request, the tool that served it, and what it gave: for a coder tool, the attempts (the first program
    and its repairs); for a function or LangChain tool, its reply or error."""

    request: str
    tool: str = Field("coder", description="the registry's tool that served the call")
    asked_tool: str | None = Field(None, description="the tool name the requester wrote; None: it named none (the default tool)")
    attempts: list[CodeAttempt] = Field(default_factory=list)
    tool_output: str | None = None
    tool_error: str | None = None
    inserted: str | None = None

    @property
    def code(self) -> str | None:
        return self.attempts[-1].code if self.attempts else None

    @property
    def output(self) -> str | None:
        if not self.attempts:
            return self.tool_output
        last = self.attempts[-1]
        return last.result.stdout if last.result else None

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else self.tool_error


class Exchange(BaseModel):
    """A finished question in a chat thread, kept so later questions see the conversation."""

    question: str
    response: str
    answer: str | None


class QuestionInput(BaseModel):
    """What a run takes (the graph's input schema, which LangGraph's server and Studio show): a question, and
    optionally the seed of its sampling. The graph's first node resets the rest of a thread's state, except the
    conversation history, so every run on a thread starts a new question."""

    question: str
    seed: int | None = Field(None, description="seeds every sampled requester and coder call of this run; unset: derived from the configured seed and the question")


class AgentState(BaseModel):
    question: str
    seed: int | None = Field(None, description="the input's seed, consumed by the first node so a thread's next question does not reuse it")
    sampling_seed: int | None = Field(None, description="seeds every sampled requester and coder call of this run")
    history: list[Exchange] = Field(default_factory=list)
    trajectory: Trajectory = Field(default_factory=Trajectory)
    calls: list[Call] = Field(default_factory=list)
    answer: str | None = None
    status: Status = "running"
    error: str | None = None
    problems: list[str] = Field(default_factory=list)


def checkpoint_serializer():
    """LangGraph's serializer with duet's state types registered, so a saved conversation loads under strict
    deserialization (LANGGRAPH_STRICT_MSGPACK, the default in a future LangGraph) instead of being refused."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    types = (Exchange, Trajectory, Segment, Call, CodeAttempt, ExecutionResult)
    return JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in types])
