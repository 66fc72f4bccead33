"""Rollouts: G trajectories per question through the compiled graph, sampled by the policy being trained.

Every sample has its own seed, derived from the run seed, the step, the question and the sample's index, so a resumed
run samples exactly what an uninterrupted one would have, whatever the batching and timing.
"""

from __future__ import annotations

from graph.config import AgentConfig
from graph.run import run_batch
from graph.seeds import derive_seed
from graph.state import AgentState


async def rollout_groups(graph, agent: AgentConfig, rows: list[dict], num_generations: int, seed: int, step: int) -> tuple[list[dict], list[AgentState]]:
    """Each row repeated num_generations times, group by group, and the final state of each run, in the same order."""
    group = [row for row in rows for _ in range(num_generations)]
    seeds = [derive_seed(seed, step, row["id"], k) for row in rows for k in range(num_generations)]
    states = await run_batch(graph, [row["question"] for row in group], agent, seeds=seeds)
    return group, states
