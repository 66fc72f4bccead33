"""Running the graph: one question, many questions at once, or a stream of events for the terminal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from graph.config import AgentConfig
from graph.state import AgentState, fresh_question


def run_config(config: AgentConfig, thread_id: str | None = None) -> dict:
    """LangGraph's per-run config; the recursion limit follows from our own limits so it never fires first."""
    steps_per_call = 1 + 2 * (config.coder.max_repairs + 1)
    limit = 10 + (config.limits.max_calls + 1) * steps_per_call
    return {"recursion_limit": limit, "configurable": {"thread_id": thread_id} if thread_id else {}}


async def run_question(graph, question: str, config: AgentConfig, thread_id: str | None = None) -> AgentState:
    values = await graph.ainvoke(fresh_question(question), run_config(config, thread_id))
    return AgentState.model_validate(values)


async def run_batch(graph, questions: list[str], config: AgentConfig, concurrency: int | None = None) -> list[AgentState]:
    """All questions run concurrently (up to `concurrency`), so the backend batches their requester calls."""
    slots = asyncio.Semaphore(concurrency or len(questions) or 1)

    async def one(question: str) -> AgentState:
        async with slots:
            return await run_question(graph, question, config)

    return list(await asyncio.gather(*(one(question) for question in questions)))


async def stream_question(graph, question: str, config: AgentConfig, thread_id: str | None = None) -> AsyncIterator[dict]:
    """Yields the nodes' events as they happen, then {"event": "done", "state": AgentState}."""
    final = None
    async for mode, payload in graph.astream(fresh_question(question), run_config(config, thread_id), stream_mode=["custom", "values"]):
        if mode == "custom":
            yield payload
        else:
            final = payload
    yield {"event": "done", "state": AgentState.model_validate(final)}
