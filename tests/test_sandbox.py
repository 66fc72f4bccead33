"""The sandbox's ordinary behaviour: results, short error summaries for the requester, the sync API, the CLI."""

import json

import pytest

from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import detect_isolation
from tests.test_cli import duet


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
    import asyncio
    import time

    started = time.monotonic()
    results = await asyncio.gather(*(box.arun("import time\ntime.sleep(0.5)\nprint('done')") for _ in range(4)))
    elapsed = time.monotonic() - started
    assert all(r.stdout == "done\n" for r in results)
    assert 0.9 < elapsed < 1.9  # two workers: two rounds of 0.5 s, not one and not four


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
