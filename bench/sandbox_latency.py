"""Sandbox speed, measured side by side in one run: a trivial program through the sandbox's pre-started workers
versus a fresh interpreter per program (`subprocess.run([python, "-c", code])`, no isolation at all), then
executions per second with every worker busy, with and without hostile programs mixed into the load.

    python bench/sandbox_latency.py [--runs 200] [--load 400]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import detect_isolation

TRIVIAL = "print(48213 * 9123)"
HOSTILE = [
    "x = bytearray(10 ** 10)",
    "import os\nwhile True:\n    os.fork()",
    "import ctypes\nctypes.string_at(0)",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "print('x' * 10 ** 7)",
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def sandbox_latencies(sandbox: Sandbox, runs: int) -> list[float]:
    await sandbox.arun(TRIVIAL)  # start the worker outside the timing
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = await sandbox.arun(TRIVIAL)
        times.append(time.perf_counter() - start)
        assert result.stdout == "439847199\n"
    return times


def fresh_interpreter_latencies(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", TRIVIAL], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


async def throughput(sandbox: Sandbox, count: int, hostile_every: int | None) -> tuple[float, int, int]:
    programs = [HOSTILE[i % len(HOSTILE)] if hostile_every and i % hostile_every == 0 else TRIVIAL for i in range(count)]
    start = time.perf_counter()
    results = await asyncio.gather(*(sandbox.arun(p) for p in programs))
    elapsed = time.perf_counter() - start
    correct = sum(r.stdout == "439847199\n" for p, r in zip(programs, results) if p == TRIVIAL)
    return count / elapsed, correct, sum(p == TRIVIAL for p in programs)


def main(runs: int = 200, load: int = 400) -> None:
    workers = os.cpu_count() or 2
    sandbox = Sandbox(SandboxLimits(timeout_s=2, concurrency=workers))

    async def measure():
        latencies = await sandbox_latencies(sandbox, runs)
        clean = await throughput(sandbox, load, None)
        mixed = await throughput(sandbox, load, 5)
        await sandbox.aclose()
        return latencies, clean, mixed

    latencies, clean, mixed = asyncio.run(measure())
    fresh = fresh_interpreter_latencies(runs)
    table = Table(title=f"sandbox ({detect_isolation().level}, {workers} programs at once) vs a fresh interpreter, {runs} runs each")
    for column in ("measure", "sandbox", "fresh interpreter", "ratio"):
        table.add_column(column)
    for name, share in (("p50 latency", 0.5), ("p95 latency", 0.95)):
        ours, theirs = percentile(latencies, share), percentile(fresh, share)
        table.add_row(name, f"{1000 * ours:.1f} ms", f"{1000 * theirs:.1f} ms", f"{theirs / ours:.1f}x lower")
    table.add_row("executions/s, all workers busy", f"{clean[0]:.0f}", f"{workers / statistics.median(fresh):.0f} (estimated)", "")
    table.add_row("executions/s, 1 in 5 hostile", f"{mixed[0]:.0f}", "", f"{mixed[1]}/{mixed[2]} ordinary results correct")
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
