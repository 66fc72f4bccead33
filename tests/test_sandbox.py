"""The sandbox's ordinary behaviour: results, short error summaries for the requester, the sync API, the CLI."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.errors import DuetError
from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import detect_isolation, host_isolation
from agents.sandbox.worker import descendants
from tests.test_cli import assert_one_line_error, duet


@pytest.fixture(scope="module")
def box():
    return Sandbox(SandboxLimits(timeout_s=2, concurrency=2))


@pytest.mark.parametrize(
    ("code", "summary"),
    [
        ("x = 1\nprint(x / 0)", "ZeroDivisionError: division by zero (line 2: print(x / 0))"),
        ("print(undefined)", "NameError: name 'undefined' is not defined (line 1: print(undefined))"),
        ("import nosuchmodule", "ModuleNotFoundError: No module named 'nosuchmodule' (line 1: import nosuchmodule)"),
        ("x = 3", "no output (print the result)"),
        ("raise SystemExit('bad input')", "bad input"),
        ("import time\ntime.sleep(5)", "timed out after 2 s"),
    ],
)
async def test_error_summaries_are_short_and_useful(box, code, summary):
    assert (await box.arun(code)).error == summary


async def test_syntax_error_names_the_problem(box):
    result = await box.arun("print(1 +)")
    assert result.error.startswith("SyntaxError") and "line 1" in result.error


async def test_success_has_no_error_and_keeps_stdout(box):
    result = await box.arun("import sympy, numpy, fractions\nprint(sympy.factorint(360), numpy.int64(7) * 6, fractions.Fraction(1, 3) + 1)")
    assert result.ok and result.stdout == "{2: 3, 3: 2, 5: 1} 42 4/3\n" and result.exit_code == 0


async def test_programs_run_in_parallel_up_to_the_configured_concurrency(box):
    """From the start and end times the programs print (the monotonic clock is the machine's, in every namespace):
    two at once, never more. How fast that is belongs to bench/sandbox_latency.py."""
    program = "import time\nstart = time.monotonic()\ntime.sleep(0.3)\nprint(start, time.monotonic())"
    results = await asyncio.gather(*(box.arun(program) for _ in range(6)))
    spans = [tuple(map(float, r.stdout.split())) for r in results]
    most_at_once = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert most_at_once == box.limits.concurrency == 2


def test_sync_api():
    assert Sandbox(SandboxLimits(concurrency=1)).run("print(2 ** 100)").stdout == f"{2 ** 100}\n"


def test_exec_cli_json_and_exit_codes(tmp_path):
    program = tmp_path / "p.py"
    program.write_text("print(48213 * 9123)\n1 / 0\n")
    result = duet("exec", str(program), "--json", "--timeout", "3")
    assert result.returncode == 0
    record = json.loads(result.stdout)
    assert record["stdout"] == "439847199\n" and record["error"].startswith("ZeroDivisionError") and record["exit_code"] == 1
    assert set(record) == {"stdout", "stderr", "error", "exit_code", "timed_out", "truncated", "duration_s"}
    missing = duet("exec", str(tmp_path / "missing.py"))
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr


def test_exec_info_reports_the_isolation_level():
    result = duet("exec", "--info", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["level"] == detect_isolation().level


async def test_a_cancelled_run_does_not_hand_its_output_to_the_next_program():
    """A timeout around a question, or Ctrl-C in chat, cancels a run while its program still runs: the worker is
    discarded, not put back with the reply unread."""
    box = Sandbox(SandboxLimits(timeout_s=5, concurrency=1))
    stale = "import time\ntime.sleep(0.6)\nprint('stale')"
    try:
        with pytest.raises(asyncio.TimeoutError):  # cancelled while the worker still starts
            await asyncio.wait_for(box.arun(stale), 0.05)
        await asyncio.gather(box.arun("print()"), box.arun("print()"))  # both workers started
        with pytest.raises(asyncio.TimeoutError):  # cancelled while the program runs
            await asyncio.wait_for(box.arun(stale), 0.2)
        running = asyncio.ensure_future(box.arun(stale))
        await asyncio.sleep(0.2)
        running.cancel()
        outputs = [(await box.arun(f"import time\ntime.sleep(0.3)\nprint({i})")).stdout for i in range(4)]
        assert outputs == ["0\n", "1\n", "2\n", "3\n"]
    finally:
        box.close()


def test_a_new_event_loop_kills_the_workers_of_the_old_one():
    box = Sandbox(SandboxLimits(concurrency=1))
    assert asyncio.run(box.arun("print(1)")).stdout == "1\n"
    old = [worker.process.pid for worker in box._workers if worker.process]
    below = [pid for worker in old for pid in descendants(worker)]
    assert old and below
    assert asyncio.run(box.arun("print(2)")).stdout == "2\n"
    box.close()
    assert not any(alive(pid) for pid in old + below)


def test_a_waiting_child_killed_from_outside_does_not_take_its_worker_with_it():
    """Each worker forks its next program's process ahead of time; if something kills that process while it waits
    (the OOM killer, an administrator), the program still runs, in a fresh one, and the worker lives on."""
    box = Sandbox(SandboxLimits(timeout_s=5, concurrency=1))

    async def scenario():
        assert (await box.arun("print(1)")).stdout == "1\n"
        worker = next(worker for worker in box._workers if worker.process)
        deadline, seen = time.monotonic() + 10, None
        while time.monotonic() < deadline:  # after replying, the worker reaps the last program and forks the next
            below = descendants(worker.process.pid)
            waiting = sorted(pid for pid, state in below.items() if state == b"S" and not descendants(pid))
            if waiting and waiting == seen:
                break
            seen = waiting
            await asyncio.sleep(0.2)
        assert len(waiting) == 1
        os.kill(waiting[0], signal.SIGKILL)
        pid = worker.process.pid
        results = [await box.arun(f"print({n} * 7)") for n in range(2, 6)]
        return pid, worker.process, results

    try:
        pid, process, results = asyncio.run(scenario())
        assert [result.stdout for result in results] == ["14\n", "21\n", "28\n", "35\n"]
        assert all(result.error is None for result in results)
        assert process is not None and process.pid == pid  # the same worker, never restarted
    finally:
        box.close()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def test_a_level_without_namespaces_warns_in_one_line_and_a_level_with_them_does_not():
    for root in (True, False):
        isolation = host_isolation(root)
        assert isolation.warning and "\n" not in isolation.warning and f"'{isolation.level}'" in isolation.warning
        assert ("warning", isolation.warning) in isolation.describe()
    namespaces = host_isolation(False).model_copy(update={"level": "namespaces", "namespaces": True})
    assert namespaces.warning is None and detect_isolation().warning is (None if detect_isolation().namespaces else detect_isolation().warning)


def test_other_systems_than_linux_get_a_one_line_error(monkeypatch):
    """Seen as macOS by the isolation module only: the whole interpreter pretending would break its own imports."""
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(DuetError, match="needs Linux"):
        detect_isolation.__wrapped__()
    monkeypatch.undo()
    code = ("import sys, types\nimport agents.sandbox.isolation as isolation\n"
            "isolation.sys = types.SimpleNamespace(**{**vars(sys), 'platform': 'darwin'})\n"
            "from duet.cli import app\napp(['exec', '--info'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "the sandbox needs Linux (this is darwin)")
