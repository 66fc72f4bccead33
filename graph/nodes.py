"""The graph's nodes. Each reads the state and returns only the fields it changes.

Every node also reports what it did through LangGraph's custom stream (`get_stream_writer`), so `duet ask` can show
each step as it happens; with `ainvoke` the writer does nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from langgraph.config import get_stream_writer

from agents.coder import Coder
from agents.protocol import SEVERAL_ANSWERS, count_boxed, extract_code, format_result, parse_requester_segment
from agents.requester import Requester
from agents.sandbox import Sandbox
from agents.tools.calling import ToolOutcome
from agents.tools.toolbox import Toolbox
from graph.config import AgentConfig
from graph.seeds import derive_seed
from graph.state import AgentState, Call, CodeAttempt, Exchange, Segment, Trajectory

Node = Callable[[AgentState], Awaitable[dict]]
CUT_OFF = "the requester's segment ran out of tokens"


def guarded(node: Node) -> Node:
    """A failing backend or sandbox ends the run with status `error` and keeps the partial trajectory."""

    @functools.wraps(node)
    async def run(state: AgentState) -> dict:
        try:
            return await node(state)
        except Exception as error:  # noqa: BLE001 - any failure becomes the run's status, never an exception
            message = f"{node.__name__}: {type(error).__name__}: {error}"
            get_stream_writer()({"event": "error", "text": message})
            return {"status": "error", "error": message}

    return run


def make_start_node(config: AgentConfig) -> Node:
    async def start_node(state: AgentState) -> dict:
        """A new question on a thread: everything but the history starts afresh. Without a seed in the input, the
        question's sampling depends on the configured seed and the question alone."""
        seed = derive_seed(config.backends.seed, state.question) if state.seed is None else state.seed
        return {"seed": None, "sampling_seed": seed, "trajectory": Trajectory(), "calls": [], "answer": None, "status": "running", "error": None, "problems": []}

    return start_node


def make_requester_node(requester: Requester, toolbox: Toolbox, config: AgentConfig) -> Node:
    async def requester_node(state: AgentState) -> dict:
        emit = get_stream_writer()
        trajectory, problems = state.trajectory, list(state.problems)
        if not trajectory.segments:
            history = [(exchange.question, exchange.response) for exchange in state.history]
            prompt, dropped = requester.prompt_ids(state.question, history, reserve=config.limits.max_total_tokens)
            if dropped:
                problems.append(f"left out the {dropped} oldest exchanges of this conversation to fit the model's context")
                emit({"event": "notice", "text": problems[-1]})
            trajectory = trajectory.appended(Segment(source="prompt", token_ids=prompt, text=requester.backend.tokenizer.decode(prompt)))
        budget = min(config.limits.max_total_tokens - trajectory.count("requester", "inserted"), requester.room(trajectory.token_ids))
        if budget <= 0:
            return {"trajectory": trajectory, "status": "limit", "problems": [*problems, "token budget spent"]}
        seed = call_seed(state, "requester", trajectory.count_segments("requester"))
        generation = await requester.write(trajectory.token_ids, budget, lambda text: emit({"event": "reasoning", "text": text}), seed)
        trajectory = trajectory.appended(
            Segment(source="requester", token_ids=generation.token_ids, text=generation.text, logprobs=generation.logprobs)
        )
        turn = parse_requester_segment(requester.visible_text(generation.token_ids), requester.mode)
        update = {"trajectory": trajectory, "problems": [*problems, *turn.problems]}
        if turn.kind in ("request", "code"):
            if len(state.calls) >= config.limits.max_calls:
                return {**update, "status": "limit", "problems": [*update["problems"], f"more than {config.limits.max_calls} requests"]}
            if turn.kind == "request":
                tool, problem = await toolbox.resolve(turn.tool, turn.request)
                if problem:
                    update["problems"].append(problem)
                    emit({"event": "notice", "text": problem})
                emit({"event": "request", "text": turn.request, "tool": tool.name})
                return {**update, "calls": [*state.calls, Call(request=turn.request, tool=tool.name, asked_tool=turn.tool)]}
            emit({"event": "code", "text": turn.code or turn.request, "attempt": 1})
            return {**update, "calls": [*state.calls, Call(request=turn.request, attempts=[own_program(turn.code)])]}
        if generation.finish_reason == "length":  # cut off, whatever it wrote: a box in it is not taken as the answer
            return {**update, "status": "limit", "problems": [*update["problems"], CUT_OFF]}
        if turn.kind == "answer":
            boxes = sum(count_boxed(s.text, requester.mode) for s in trajectory.segments if s.source == "requester")
            if boxes > 1:
                update["problems"].append(SEVERAL_ANSWERS)
            emit({"event": "answer", "text": turn.answer})
            return {**update, "answer": turn.answer, "status": "answered"}
        return {**update, "status": "no_answer"}

    return requester_node


def own_program(code: str | None) -> CodeAttempt:
    """The inline mode's program, written by the requester itself: no coder reply, so a failure is never repaired
    and its error goes back to the requester, whose recovery it is to learn."""
    return CodeAttempt(reply="", code=code, error=None if code else "the code block holds no program")


NO_HELPER = "no helper is available in this run; continue without it"


def make_coder_node(coder: Coder | None, config: AgentConfig) -> Node:
    """With no coder (the requester-alone evaluation), the prompt and protocol stay as they are and every request is
    answered with a fixed notice, so the comparison isolates what the coder adds."""

    async def coder_node(state: AgentState) -> dict:
        call = state.calls[-1]
        if coder is None:
            attempt = CodeAttempt(reply="", code=None, error=NO_HELPER)
        elif not call.request:
            attempt = CodeAttempt(reply="", code=None, error="empty request: write what to compute between the tags")
        else:
            failures = [(a.reply, a.error) for a in call.attempts if a.failed]
            question = state.question if config.coder.show_question else None
            reply = await coder.write(call.request, question, failures, call_seed(state, "coder", len(state.calls), len(call.attempts)))
            code = extract_code(reply)
            attempt = CodeAttempt(reply=reply, code=code, error=None if code else "the coder wrote no program for this request")
            get_stream_writer()({"event": "code", "text": code or reply, "attempt": len(call.attempts) + 1})
        return {"calls": [*state.calls[:-1], call.model_copy(update={"attempts": [*call.attempts, attempt]})]}

    return coder_node


def call_seed(state: AgentState, *call: object) -> int | None:
    """Each sampled call of a run gets its own seed, named by the run's seed and which call it is."""
    return None if state.sampling_seed is None else derive_seed(state.sampling_seed, *call)


def make_executor_node(sandbox: Sandbox, requester: Requester, config: AgentConfig) -> Node:
    async def executor_node(state: AgentState) -> dict:
        emit = get_stream_writer()
        call = state.calls[-1]
        attempt = call.attempts[-1]
        if attempt.code is not None:
            result = await sandbox.arun(attempt.code)
            attempt = attempt.model_copy(update={"result": result, "error": result.error})
            emit({"event": "output" if result.ok else "execution_error", "text": result.stdout if result.ok else result.error})
        attempts = [*call.attempts[:-1], attempt]
        if attempt.failed and repairs_left(attempts, config) and attempt.reply:  # a coder replied and can repair
            return {"calls": [*state.calls[:-1], call.model_copy(update={"attempts": attempts})]}
        return inserted_result(state, requester, call.model_copy(update={"attempts": attempts}), attempt.result.stdout if attempt.result else None, attempt.error)

    return executor_node


def make_tool_node(toolbox: Toolbox, requester: Requester, with_tools: bool) -> Node:
    """A function or LangChain tool answers the request itself: no program, no sandbox. Without tools (the
    requester-alone evaluation) it gets the same notice as a request for the coder."""

    async def tool_node(state: AgentState) -> dict:
        call = state.calls[-1]
        if not with_tools:
            outcome = ToolOutcome(error=NO_HELPER)
        elif not call.request:
            outcome = ToolOutcome(error="empty request: write what you need between the tags")
        else:
            outcome = await toolbox.call(toolbox.tools[call.tool], call.request)
            get_stream_writer()({"event": "output" if outcome.error is None else "tool_error", "text": outcome.output or outcome.error, "tool": call.tool})
        served = call.model_copy(update={"tool_output": outcome.output, "tool_error": outcome.error})
        return inserted_result(state, requester, served, outcome.output, outcome.error)

    return tool_node


def inserted_result(state: AgentState, requester: Requester, call: Call, output: str | None, error: str | None) -> dict:
    """The call's result enters the trajectory as text, tokenized once, here; the call is done."""
    inserted = format_result(output, error)
    ids = requester.encode_inserted(inserted)
    trajectory = state.trajectory.appended(Segment(source="inserted", token_ids=ids, text=requester.backend.tokenizer.decode(ids)))
    get_stream_writer()({"event": "result", "text": inserted})
    return {"calls": [*state.calls[:-1], call.model_copy(update={"inserted": inserted})], "trajectory": trajectory}


def repairs_left(attempts: list[CodeAttempt], config: AgentConfig) -> bool:
    return len(attempts) <= config.coder.max_repairs


def make_finish_node(requester: Requester) -> Node:
    async def finish_node(state: AgentState) -> dict:
        """Record the exchange for the chat history (as the reader sees it, without special tokens, since the chat
        template adds its own) and report the final status."""
        get_stream_writer()({"event": "status", "text": state.status})
        response = requester.visible_text([t for s in state.trajectory.segments if s.source != "prompt" for t in s.token_ids])
        exchange = Exchange(question=state.question, response=response, answer=state.answer)
        return {"history": [*state.history, exchange]}

    return finish_node
