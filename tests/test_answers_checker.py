"""The answer checker under hostile answers: nothing is executed, every check ends in bounded time, the worker that
overran is replaced, and concurrent checks from asyncio stay prompt."""

import asyncio
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from training.answer_checker import AnswerChecker, CheckerError

TIMEOUT_S = 2.0
MARGIN_S = 3.0  # pebble notices an overrun within 0.1 s; the rest is a loaded machine's slack
ROWS = {
    "countdown": {"answer": "6*(98 - 54) - 34 - 66", "source": "countdown", "metadata": {"numbers": [66, 34, 98, 54, 6], "target": 164}},
    "knights-knaves": {"answer": "Victoria is a knight, and Jacob is a knave.", "source": "knights-knaves", "metadata": {}},
    "number": {"answer": "169829311.68", "source": "big-value", "metadata": {}},
    "symbolic": {"answer": "x^2+1", "source": "test", "metadata": {}},
}
SLOW = "(x+1)^{100000}"  # within every size limit, but sympy expands it for minutes against a symbolic gold answer
HOSTILE = {
    "sleep": "__import__('time').sleep(100)",
    "tower": "9**9**9**9",
    "power": "10**10**10",
    "latex tower": "10^{10^{10}}",
    "exponent": "1e999999999",
    "long": "9" * 100_000,
    "nested frac": r"\frac{" * 300 + "1" + "}{2}" * 300,
    "nested braces": "{" * 5_000 + "1" + "}" * 5_000,
    "unicode": "\x00\ud800\u202e\U0001f4a9\uffff\U0010ffff\u0301" * 50,
    "none": None,
    "empty": "",
}


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker(timeout_s=TIMEOUT_S, workers=2) as started:
        assert started.check(ROWS["number"], "169829311.68").correct  # start the workers outside the timed checks
        yield started


@pytest.mark.parametrize("source", ROWS)
def test_an_injected_command_is_never_run(checker, source, tmp_path):
    marker = tmp_path / "ran"
    verdict = checker.check(ROWS[source], f"__import__('os').system('touch {marker}')")
    assert not verdict.correct
    assert not marker.exists()


@pytest.mark.parametrize("source", ROWS)
@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_answer_is_wrong_within_the_time_limit_and_the_checker_still_works(checker, name, source):
    started = time.perf_counter()
    verdict = checker.check(ROWS[source], HOSTILE[name])
    assert time.perf_counter() - started < TIMEOUT_S + MARGIN_S
    assert not verdict.correct and verdict.reason
    assert checker.check(ROWS[source], ROWS[source]["answer"]).correct


def test_an_overrunning_check_is_reported_as_timed_out(checker):
    assert checker.check(ROWS["symbolic"], SLOW).reason == "timed out after 2 s"
    assert checker.check(ROWS["symbolic"], "1 + x^2").correct


async def test_many_concurrent_checks_stay_prompt_beside_a_hostile_one():
    """A fresh checker, so no worker replaced after an earlier timeout is still starting (about a second)."""
    with AnswerChecker(timeout_s=3, workers=2) as checker:
        assert (await checker.acheck(ROWS["number"], "169829311.68")).correct

        async def timed(row, answer):
            started = time.perf_counter()
            verdict = await checker.acheck(row, answer)
            return verdict, time.perf_counter() - started

        answers = [(ROWS["symbolic"], SLOW)] + [(row, row["answer"]) for row in ROWS.values()] * 12 + [(ROWS["countdown"], "6*(98 - 54) - 34")]
        results = await asyncio.gather(*(timed(row, answer) for row, answer in answers))
    (hostile, hostile_s), *honest, (short, _) = results
    assert hostile.reason == "timed out after 3 s" and hostile_s < 3 + MARGIN_S
    assert all(verdict.correct for verdict, _ in honest) and len(honest) == 48
    assert max(seconds for _, seconds in honest) < 1.5  # not queued behind the hostile check
    assert not short.correct


def test_the_per_check_overhead_is_small(checker):
    row, answer = ROWS["number"], ROWS["number"]["answer"]
    started = time.perf_counter()
    for _ in range(100):
        checker.check(row, answer)
    assert (time.perf_counter() - started) / 100 < 0.02


def running(pid: int) -> bool:
    """A pid that is gone, or a zombie waiting to be reaped, no longer runs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_closing_stops_the_workers_and_resolves_a_check_in_flight():
    others = set(multiprocessing.active_children())
    checker = AnswerChecker(timeout_s=30)
    assert set(multiprocessing.active_children()) == others  # workers start on the first check, not before
    assert checker.check(ROWS["number"], "169829311.68").correct
    workers = set(multiprocessing.active_children()) - others
    assert len(workers) == 2

    async def close_while_checking():
        pending = asyncio.ensure_future(checker.acheck(ROWS["symbolic"], SLOW))
        await asyncio.sleep(0.5)
        checker.close()
        return await asyncio.wait_for(pending, 5)

    with pytest.raises(CheckerError, match="closed before a check ended"):  # no verdict was reached: not a wrong answer
        asyncio.run(close_while_checking())
    assert not any(running(worker.pid) for worker in workers)


def test_no_worker_outlives_an_interpreter_that_never_closed_its_checker(tmp_path: Path):
    script = textwrap.dedent("""
        import multiprocessing
        from training.answer_checker import AnswerChecker, CheckerError
        if __name__ == "__main__":
            checker = AnswerChecker()
            assert checker.check({"answer": "2"}, "2").correct
            print(" ".join(str(p.pid) for p in multiprocessing.active_children()))
    """)
    (tmp_path / "unclosed.py").write_text(script)
    run = subprocess.run([sys.executable, str(tmp_path / "unclosed.py")], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parents[1], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert run.returncode == 0, run.stderr
    pids = [int(pid) for pid in run.stdout.split()]
    assert pids
    time.sleep(0.2)
    assert not any(running(pid) for pid in pids)


def test_a_checker_that_cannot_start_is_an_error_that_says_what_to_do_not_a_wrong_answer(tmp_path: Path):
    """Spawned workers import the calling script again; without a main guard they cannot start."""
    (tmp_path / "unguarded.py").write_text(textwrap.dedent("""
        from training.rewards import check_answer
        print("verdict:", check_answer({"answer": "439847199"}, "439847199"))
    """))
    run = subprocess.run([sys.executable, str(tmp_path / "unguarded.py")], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert run.returncode != 0 and "verdict:" not in run.stdout
    assert "CheckerError" in run.stderr and 'if __name__ == "__main__":' in run.stderr


async def test_a_failed_check_stops_the_evaluation_and_records_no_verdict(tmp_path, monkeypatch):
    import training.evaluate
    from agents.errors import DuetError
    from graph.state import AgentState
    from training.data import write_jsonl
    from training.evaluate import EvalConfig, evaluate

    async def broken(row, answer):
        raise CheckerError("the answer checker could not run (BrokenProcessPool)")

    async def answered(graph, question, config):
        return AgentState(question=question, answer="2", status="answered")

    monkeypatch.setattr(training.evaluate, "acheck_answer", broken)
    monkeypatch.setattr("graph.run.run_question", answered)
    write_jsonl([{"id": "1", "question": "1 + 1?", "answer": "2"}], tmp_path / "q.jsonl")

    class NoTeam:
        def graph(self, **_):
            return None

        async def aclose(self):
            pass

    config = EvalConfig(data=[tmp_path / "q.jsonl"], modes=["alone"])
    with pytest.raises(DuetError, match="could not run"):
        await evaluate(config, tmp_path / "out", team=NoTeam())
    assert (tmp_path / "out" / "records.jsonl").read_text() == ""  # nothing is counted wrong; a resume runs it again


async def test_an_evaluation_record_says_why_an_answer_was_wrong():
    from graph.state import AgentState
    from training.evaluate import record_of
    from training.rewards import acheck_answer

    row = {"id": "1", "question": "q", "answer": "169829311.68", "source": "big-value", "metadata": {}}
    state = AgentState(question="q", answer="169829311.67999998", status="answered")
    made = record_of("set", row, "alone", state, 1.0, await acheck_answer(row, state.answer))
    assert (made.correct, made.verdict_reason) == (False, "a different number from the gold answer")
