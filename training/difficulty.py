"""Difficulty filtering and curriculum, as published: sample the base requester k times per question, drop the
questions it always solves, and order the rest from easy to hard by pass rate.

`duet data filter` appends each question's pass rate to data/x.pass_rates.jsonl as soon as its k attempts are done,
under a first line naming the settings they were measured with; a run that was stopped, killed or that met a backend
error is run again with the same command and measures only what the file lacks. A question with an attempt that ended
in a backend error is not recorded (a machinery failure is no verdict): the next run measures it again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from agents.errors import DuetError
from graph.config import AgentConfig
from graph.run import gather_or_cancel, run_question
from graph.seeds import derive_seed
from training.rewards import acheck_answer

Answerer = Callable[[dict, int], Awaitable[bool | None]]  # None: the attempt could not be judged (a backend error)


async def measure_pass_rates(rows: list[dict], solve: Answerer, k: int, concurrency: int = 16, log: Path | None = None,
                             settings: dict | None = None, on_progress=None) -> dict[str, float]:
    """Share of k attempts at each question that `solve` got right; all attempts run concurrently (bounded). With a
    `log` (see measurement_log), each question's rate is appended as soon as its k attempts are done and the questions
    the log already holds are not attempted again; `settings` are what the log must have been measured with.
    `on_progress` is called as `training.evaluate.evaluate` calls it: (total=, completed=), then (advance=1) per
    question. Questions with an unjudged attempt are left out of the result (and of the log)."""
    slots = asyncio.Semaphore(concurrency)
    known = {} if log is None else read_measurements(log, {**(settings or {}), "k": k})
    pending = [row for row in rows if row["id"] not in known]
    if on_progress:
        on_progress(total=len(rows), completed=len(rows) - len(pending))
    rates = {row["id"]: known[row["id"]] for row in rows if row["id"] in known}

    async def attempt(row: dict, index: int) -> bool | None:
        async with slots:
            return await solve(row, index)

    async def question(row: dict, sink) -> None:
        results = await asyncio.gather(*(attempt(row, index) for index in range(k)))
        if all(result is not None for result in results):
            rates[row["id"]] = sum(results) / k
            if sink is not None:
                sink.write(json.dumps({"id": row["id"], "passed": sum(results), "k": k, "pass_rate": rates[row["id"]]}) + "\n")
                sink.flush()
        if on_progress:
            on_progress(advance=1)

    async def every_question(sink) -> None:
        await gather_or_cancel(question(row, sink) for row in pending)  # one failed: the others stop before the log closes

    if log is None:
        await every_question(None)
    elif pending:
        with log.open("a", encoding="utf-8") as sink:
            await every_question(sink)
    return {row["id"]: rates[row["id"]] for row in rows if row["id"] in rates}


def measurement_log(data: Path) -> Path:
    """Beside the data, as the pass rates are: data/x.jsonl -> data/x.pass_rates.jsonl."""
    return Path(data).with_suffix(".pass_rates.jsonl")


def read_measurements(log: Path, settings: dict) -> dict[str, float]:
    """The pass rates a log holds, after starting it (its first line, the settings) when it is new; a log measured
    with other settings is refused, naming what differs. A line cut short by a killed run is dropped."""
    from training.evaluate import drop_partial_line

    drop_partial_line(log)
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    if not lines:
        log.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")
        return {}
    try:
        stored = json.loads(lines[0])["settings"]
    except (ValueError, KeyError, TypeError):
        raise DuetError(f"{log} is not a log of pass rates (its first line names no settings); move it away to measure again") from None
    differ = sorted(key for key in {*stored, *settings} if stored.get(key) != settings.get(key))
    if differ:
        shown = ", ".join(f"{key} ({_short(stored.get(key))}, now {_short(settings.get(key))})" for key in differ)
        raise DuetError(f"{log} holds pass rates measured with another {shown}; run with the same settings to resume, or delete it to measure again")
    rates = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            rates[entry["id"]] = float(entry["pass_rate"])
        except (ValueError, KeyError, TypeError):
            continue
    return rates


def _short(value) -> str:
    return "different agent settings" if isinstance(value, dict) else repr(value)


def graph_answerer(graph, config: AgentConfig) -> Answerer:
    """Runs the graph on a question; each attempt samples with its own seed (named by the question and the attempt),
    or all k attempts would draw the same tokens and every pass rate would be 0 or 1. A run that ended in a backend
    error is not judged (None)."""

    async def solve(row: dict, attempt: int) -> bool:
        state = await run_question(graph, row["question"], config, seed=derive_seed(config.backends.seed, row["id"], attempt))
        if state.status == "error":
            return None
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
