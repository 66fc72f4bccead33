"""Difficulty filtering and curriculum, as published: sample the base requester k times per question, drop the
questions it always solves, and order the rest from easy to hard by pass rate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from graph.config import AgentConfig
from graph.run import run_question
from graph.seeds import derive_seed
from training.rewards import acheck_answer

Answerer = Callable[[dict, int], Awaitable[bool]]


async def measure_pass_rates(rows: list[dict], solve: Answerer, k: int, concurrency: int = 16) -> dict[str, float]:
    """Share of k attempts at each question that `solve` got right; all attempts run concurrently (bounded)."""
    slots = asyncio.Semaphore(concurrency)

    async def attempt(row: dict, index: int) -> bool:
        async with slots:
            return await solve(row, index)

    results = await asyncio.gather(*(attempt(row, index) for row in rows for index in range(k)))
    return {row["id"]: sum(results[i * k : (i + 1) * k]) / k for i, row in enumerate(rows)}


def graph_answerer(graph, config: AgentConfig) -> Answerer:
    """Runs the graph on a question; each attempt samples with its own seed (named by the question and the attempt),
    or all k attempts would draw the same tokens and every pass rate would be 0 or 1."""

    async def solve(row: dict, attempt: int) -> bool:
        state = await run_question(graph, row["question"], config, seed=derive_seed(config.backends.seed, row["id"], attempt))
        return (await acheck_answer(row, state.answer)).correct

    return solve


def filter_and_order(rows: list[dict], pass_rates: dict[str, float]) -> list[dict]:
    """Drop what is always solved, then order from easy to hard (highest pass rate first). Questions without a
    measured rate are dropped: their difficulty is unknown."""
    kept = [row for row in rows if row["id"] in pass_rates and pass_rates[row["id"]] < 1.0]
    return sorted(kept, key=lambda row: -pass_rates[row["id"]])


def pass_rates_path(data: Path) -> Path:
    """Saved beside the data they describe: data/x.jsonl -> data/x.pass_rates.json."""
    return data.with_suffix(".pass_rates.json")


def save_pass_rates(data: Path, pass_rates: dict[str, float], k: int) -> Path:
    path = pass_rates_path(data)
    path.write_text(json.dumps({"k": k, "pass_rates": pass_rates}, indent=1))
    return path


def load_pass_rates(data: Path) -> dict[str, float] | None:
    """The pass rates saved beside a data file, if `duet data filter` wrote any."""
    path = pass_rates_path(Path(data))
    return json.loads(path.read_text())["pass_rates"] if path.is_file() else None
