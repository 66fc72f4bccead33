"""Running the graph: one question, many questions at once, or a stream of events for the terminal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from graph.config import AgentConfig
from graph.state import AgentState


def run_config(config: AgentConfig, thread_id: str | None = None) -> dict:
    """LangGraph's per-run config; the recursion limit follows from our own limits so it never fires first."""
    steps_per_call = 1 + 2 * (config.coder.max_repairs + 1)
    limit = 10 + (config.limits.max_calls + 1) * steps_per_call
    return {"recursion_limit": limit, "configurable": {"thread_id": thread_id} if thread_id else {}}


async def run_question(graph, question: str, config: AgentConfig, thread_id: str | None = None, seed: int | None = None) -> AgentState:
    values = await graph.ainvoke({"question": question, "seed": seed}, run_config(config, thread_id))
    return AgentState.model_validate(values)


async def run_batch(
    graph, questions: list[str], config: AgentConfig, concurrency: int | None = None, seeds: list[int] | None = None,
    on_finished: Callable[[AgentState], None] | None = None,
) -> list[AgentState]:
    """All questions run concurrently (up to `concurrency`), so the backend batches their requester calls. The same
    question asked several times (a GRPO group) needs a seed per copy, or every copy samples the same tokens.
    `on_finished` is called with each state as its run ends (to show progress)."""
    slots = asyncio.Semaphore(concurrency or len(questions) or 1)

    async def one(question: str, seed: int | None) -> AgentState:
        async with slots:
            state = await run_question(graph, question, config, seed=seed)
        if on_finished:
            on_finished(state)
        return state

    return list(await asyncio.gather(*(one(question, seed) for question, seed in zip(questions, seeds or [None] * len(questions), strict=True))))


async def stream_question(graph, question: str, config: AgentConfig, thread_id: str | None = None) -> AsyncIterator[dict]:
    """Yields the nodes' events as they happen, then {"event": "done", "state": AgentState}."""
    final = None
    async for mode, payload in graph.astream({"question": question}, run_config(config, thread_id), stream_mode=["custom", "values"]):
        if mode == "custom":
            yield payload
        else:
            final = payload
    yield {"event": "done", "state": AgentState.model_validate(final)}


async def gather_or_cancel(awaitables) -> list:
    """All results, or, when one fails (a checker that cannot run, a closed backend), the others cancelled and
    finished before its error goes on: none keeps writing to a file or a backend the caller is about to close."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
