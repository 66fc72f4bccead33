"""The graph's overhead: 16 questions through the graph, against the same requester tokens from the backend alone.

Both runs happen here, one after the other, on the same loaded model. The backend-alone run replays every requester
segment the graph produced (same context ids, same budget, same stop string), one batch per round of segments, so it
generates the same tokens with none of the graph's routing, coder, sandbox or waiting. The ratio is the price of the
whole agent loop over bare generation; the table also shows how much of it the coder and the executor take.

    python bench/graph_overhead.py [--questions 16] [--requester default] [--coder default]
"""

from __future__ import annotations

import asyncio
import time
from itertools import zip_longest

import typer
from rich.console import Console
from rich.table import Table

from agents.backends.base import GenerationRequest, SamplingParams
from agents.protocol import requester_stops
from graph.build import Team
from graph.run import run_batch

QUESTIONS = [
    "What is 48213 * 9123?", "What is 123456789 + 987654321?", "What is 7777777 * 3333?", "What is 2 ** 40?",
    "A farmer has 48213 sheep and sells 9123. How many are left?", "What is 98765 * 4321?",
    "What is the least common multiple of 38 and 16?", "What is 5551212 - 1234567?", "What is 31415 * 27182?",
    "Sara earns 123456 dollars a year for 12 years. How much does she earn in total?", "What is 99999 * 99999?",
    "What is 1000003 * 999983?", "What is 65536 * 65536?", "What is 11111111 + 88888889?",
    "A shop sells 8123 pens a day for 365 days. How many pens is that?", "What is 424242 * 17?",
]


def main(questions: int = 16, requester: str = "default", coder: str = "default") -> None:
    console = Console()
    team = Team(requester, coder)
    asked = (QUESTIONS * (questions // len(QUESTIONS) + 1))[:questions]
    backend = team.requester.backend

    async def measure():
        await backend.generate([GenerationRequest(team.requester.prompt_ids("warm up")[0], SamplingParams(max_new_tokens=4))])
        start = time.perf_counter()
        states = await run_batch(team.graph(), asked, team.config)
        graph_s = time.perf_counter() - start

        rounds = zip_longest(*[replay_requests(state) for state in states])
        start = time.perf_counter()
        replayed = []
        for batch in rounds:
            replayed += await backend.generate([request for request in batch if request is not None])
        alone_s = time.perf_counter() - start
        return states, graph_s, alone_s, replayed

    states, graph_s, alone_s, replayed = asyncio.run(measure())
    graph_segments = [seg.token_ids for state in states for seg in state.trajectory.segments if seg.source == "requester"]
    same = sorted(map(tuple, graph_segments)) == sorted(tuple(g.token_ids) for g in replayed)
    executor_s = sum(a.result.duration_s for s in states for c in s.calls for a in c.attempts if a.result)

    table = Table(title=f"graph vs backend alone, {len(asked)} questions, requester {requester}, coder {coder}")
    for column in ("measure", "value"):
        table.add_column(column)
    table.add_row("requester tokens", str(sum(map(len, graph_segments))))
    table.add_row("requests / coder attempts", f"{sum(len(s.calls) for s in states)} / {sum(len(c.attempts) for s in states for c in s.calls)}")
    table.add_row("graph wall time", f"{graph_s:.2f} s")
    table.add_row("backend alone, same requester tokens", f"{alone_s:.2f} s")
    table.add_row("sandbox time inside the graph (summed)", f"{executor_s:.2f} s")
    table.add_row("replay produced identical tokens", "yes" if same else "no (sampling or numerical noise)")
    table.add_row("graph / backend alone", f"{graph_s / alone_s:.2f}x (overhead {100 * (graph_s / alone_s - 1):.0f}%)")
    console.print(table)


def replay_requests(state) -> list[GenerationRequest]:
    """One request per requester segment: the ids before it as the prompt, its own length as the budget."""
    requests, context = [], []
    for segment in state.trajectory.segments:
        if segment.source == "requester":
            requests.append(GenerationRequest(list(context), SamplingParams(max_new_tokens=len(segment.token_ids), stop=requester_stops("request"))))
        context += segment.token_ids
    return requests


if __name__ == "__main__":
    typer.run(main)
