"""What a person sees while duet works (issue 16): progress as plain lines when the output is not a terminal, a data
filter that resumes, a one-line explanation of a run without an answer, and training curves one can read."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from graph.state import AgentState, Call
from tests.test_cli import REPO, duet
from training import big_value
from training.data import write_jsonl
from training.difficulty import measure_pass_rates, measurement_log
from training.progress import Progress

CONTROL = ("\r", "\x1b")


def plain_console() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, soft_wrap=True), sink


def assert_plain(text: str) -> None:
    for character in CONTROL:
        assert character not in text, repr(text[:400])


def lines_of(text: str, label: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{label}  ")]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# --- the helper -----------------------------------------------------------------------------------------------------

def test_without_a_terminal_a_line_every_n_items_with_count_rate_and_time_left():
    console, sink = plain_console()
    clock = Clock()
    with Progress("eval", 100, unit="question", console=console, every=10, seconds=None, clock=clock) as progress:
        for _ in range(25):
            clock.now += 2.0
            progress.update(advance=1, live="accuracy 40%")
    lines = lines_of(sink.getvalue(), "eval")
    assert [line.split()[1] for line in lines] == ["0/100", "10/100", "20/100", "25/100"]  # the start, every 10, the end
    assert "10/100 questions (10%)  accuracy 40%  2.0 s/question  elapsed 0:00:20  left 0:03:00" in lines[1]
    assert_plain(sink.getvalue())


def test_a_heartbeat_line_when_nothing_finished_for_a_while():
    console, sink = plain_console()
    clock = Clock()
    progress = Progress("eval", 4, unit="question", console=console, seconds=30, clock=clock).start()
    clock.now = 29
    progress.tick()
    clock.now = 31
    progress.tick()  # six minutes of one slow batch no longer look like a hang
    progress.close()
    lines = lines_of(sink.getvalue(), "eval")
    assert len(lines) == 2 and "0/4 questions" in lines[1] and "elapsed 0:00:31" in lines[1]


def test_a_resumed_count_is_the_start_not_part_of_the_rate():
    console, sink = plain_console()
    clock = Clock()
    with Progress("eval", unit="question", console=console, seconds=None, clock=clock) as progress:
        progress.update(total=10, completed=8)  # as evaluate() reports what the folder already holds
        clock.now = 5.0
        progress.update(advance=1)
    lines = lines_of(sink.getvalue(), "eval")
    assert lines[0].startswith("eval  8/10 questions (80%)  elapsed")
    assert "9/10 questions" in lines[1] and "5.0 s/question" in lines[1] and "left 0:00:05" in lines[1]


def test_a_terminal_gets_the_live_bar():
    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=True)
    with Progress("eval", 3, console=console) as progress:
        assert progress.bar is not None
        progress.update(advance=3)
    assert progress.bar is None


# --- each command, its output captured ------------------------------------------------------------------------------

@pytest.fixture
def short_agent(tmp_path) -> Path:
    path = tmp_path / "short.yaml"
    path.write_text("requester: {max_segment_tokens: 8}\nlimits: {max_calls: 0}\n")
    return path


def test_eval_into_a_file_writes_a_plain_line_per_question(tmp_path, tiny_dir, short_agent):
    data = tmp_path / "bv.jsonl"
    write_jsonl(big_value.generate(3, 0), data)
    args = ["eval", "--data", str(data), "--out", str(tmp_path / "report"), "--requester", str(tiny_dir), "--coder", str(tiny_dir),
            "--modes", "coder", "--config", str(short_agent)]
    result = duet(*args)
    assert result.returncode == 0, result.stderr
    assert_plain(result.stderr)
    assert [line.split()[1] for line in lines_of(result.stderr, "eval")] == ["0/3", "1/3", "2/3", "3/3"]
    assert "left 0:00:00" in lines_of(result.stderr, "eval")[-1]
    again = duet(*args)  # everything is done: it starts at 3/3
    assert lines_of(again.stderr, "eval")[0].startswith("eval  3/3 questions (100%)")


def test_data_filter_shows_progress_and_keeps_each_pass_rate_as_it_finishes(tmp_path, tiny_dir, short_agent):
    data = tmp_path / "bv.jsonl"
    rows = big_value.generate(3, 0)
    write_jsonl(rows, data)
    args = ["data", "filter", str(data), "--k", "2", "--out", str(tmp_path / "hard.jsonl"), "--requester", str(tiny_dir), "--coder", str(tiny_dir),
            "--config", str(short_agent)]
    result = duet(*args)
    assert result.returncode == 0, result.stderr
    assert_plain(result.stderr)
    assert [line.split()[1] for line in lines_of(result.stderr, "filter")] == ["0/3", "1/3", "2/3", "3/3"]
    log = [json.loads(line) for line in measurement_log(data).read_text().splitlines()]
    assert log[0]["settings"]["k"] == 2 and sorted(entry["id"] for entry in log[1:]) == sorted(row["id"] for row in rows)
    refused = duet(*[arg if arg != "2" else "3" for arg in args])  # --k 3: other settings than the log's
    assert refused.returncode == 1 and "another k (2, now 3)" in refused.stderr and "delete it" in refused.stderr


async def test_an_interrupted_filter_resumes_without_redoing_finished_questions(tmp_path):
    rows = [{"id": name} for name in "abcd"]
    log = tmp_path / "x.pass_rates.jsonl"
    settings = {"requester": "r", "coder": "c"}
    asked = []

    class Killed(Exception):
        pass

    async def killed_at_c(row, attempt):
        if row["id"] == "c":
            raise Killed  # stands in for the kill, or a checker that cannot run
        asked.append(row["id"])
        return attempt == 0

    with pytest.raises(Killed):
        await measure_pass_rates(rows, killed_at_c, k=2, concurrency=1, log=log, settings=settings)
    finished = [json.loads(line)["id"] for line in log.read_text().splitlines()[1:]]
    assert finished[:2] == ["a", "b"] and "c" not in finished  # (d may have finished before the run stopped)
    log.write_text(log.read_text() + '{"id": "c", "pas')  # and a line cut short by the kill
    asked.clear()

    async def solve(row, attempt):
        asked.append(row["id"])
        return row["id"] != "d"

    rates = await measure_pass_rates(rows, solve, k=2, concurrency=1, log=log, settings=settings)
    assert sorted(set(asked)) == sorted({"c", "d"} - set(finished[2:]))  # what finished is not asked again
    assert rates == {"a": 0.5, "b": 0.5, "c": 1.0, "d": 0.5 if "d" in finished else 0.0}


async def test_a_question_with_a_backend_error_is_not_recorded_and_is_measured_again(tmp_path):
    log = tmp_path / "x.pass_rates.jsonl"

    async def outage(row, attempt):
        return None if row["id"] == "b" else True

    assert await measure_pass_rates([{"id": "a"}, {"id": "b"}], outage, k=2, log=log) == {"a": 1.0}

    async def back(row, attempt):
        return False

    assert await measure_pass_rates([{"id": "a"}, {"id": "b"}], back, k=2, log=log) == {"a": 1.0, "b": 0.0}


def read_while_running(command: list[str], cwd: Path, wanted: str) -> tuple[str, bool]:
    """All of stderr, and whether the first line containing `wanted` arrived while the process was still running."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, early = [], None
    for line in process.stderr:
        seen.append(line)
        if early is None and wanted in line:
            early = process.poll() is None
    process.wait(timeout=600)
    assert process.returncode == 0, "".join(seen)
    return "".join(seen), bool(early)


def test_train_into_a_log_writes_each_step_with_its_headline_metrics_as_it_ends(tmp_path, tiny_dir):
    data = tmp_path / "questions.jsonl"
    write_jsonl(big_value.generate(4, 3), data)
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)], "order": "file"},
        "grpo": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "num_generations": 4, "per_device_train_batch_size": 4,
                 "save_steps": 3, "report_to": ["none"], "temperature": 1.0},
        "agent": {"requester": {"max_segment_tokens": 2}, "limits": {"max_total_tokens": 2, "max_calls": 0}},
    }))
    stderr, early = read_while_running([sys.executable, "-m", "duet", "train", str(recipe)], REPO, "GRPO  1/3 steps")
    assert_plain(stderr)
    steps = lines_of(stderr, "GRPO")
    assert [line.split()[1] for line in steps] == ["0/3", "1/3", "2/3", "3/3"]
    assert all(word in steps[1] for word in ("reward", "accuracy", "format", "asked", "s/step", "left"))
    assert early  # step 1's line was in the log before the run ended


def test_sft_into_a_log_shows_the_trace_sampling_and_each_step(tmp_path, tiny_dir):
    demonstrations = tmp_path / "demonstrations.jsonl"
    write_jsonl([{"question": f"What is {n} - 1?", "response": f"<request>subtract 1 from {n}</request>\n<result>\n{n - 1}\n</result>\n\\boxed{{{n - 1}}}"}
                 for n in (5, 9, 14)], demonstrations)
    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 123456789 * 987654321?", "answer": "121932631112635269"}], data)
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"samples_per_question": 2, "temperatures": [1.0], "demonstrations": str(demonstrations)},
        "sft": {"output_dir": str(tmp_path / "sft"), "num_train_epochs": 2, "per_device_train_batch_size": 2, "report_to": ["none"]},
        "agent": {"requester": {"max_segment_tokens": 8}, "limits": {"max_total_tokens": 8}},
    }))
    result = subprocess.run([sys.executable, "-m", "duet", "sft", str(recipe)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert_plain(result.stderr)
    assert [line.split()[1] for line in lines_of(result.stderr, "traces")] == ["0/2", "1/2", "2/2"]
    steps = lines_of(result.stderr, "SFT")
    assert [line.split()[1] for line in steps] == ["0/4", "1/4", "2/4", "3/4", "4/4"] and "loss" in steps[1]


# --- a run without an answer says why ------------------------------------------------------------------------------

def test_a_run_without_an_answer_says_why_in_one_line_and_what_to_try():
    from duet.render import EventPrinter, explain

    silent = AgentState(question="How many r are in strawberry?", status="no_answer", problems=["no tool call and no \\boxed{} answer"])
    why = explain(silent)
    assert why.startswith("no answer: the requester stopped without asking for any computation")
    assert "trained requester" in why and "--mode inline" in why and "bigger model" in why
    looping = AgentState(question="q", status="limit", calls=[Call(request="add")] * 5, problems=["more than 4 requests"])
    assert "more than 4 requests" in explain(looping) and "--max-calls" in explain(looping)
    assert "--mode request" in explain(silent, mode="inline")
    assert "without a request" in explain(AgentState(question="What is 3.11 - 3.9?", status="answered", answer="1"))
    assert explain(AgentState(question="q", status="answered", answer="2", calls=[Call(request="add")])) is None
    console, sink = plain_console()
    EventPrinter(console).finish(silent)
    assert sink.getvalue().count("\n") == 1


# --- curves ---------------------------------------------------------------------------------------------------------

def test_curves_are_smoothed_over_faint_points_with_no_empty_kl_panel():
    import matplotlib.pyplot as plt

    from training.run_log import curves_figure, smoothed

    zigzag = [0.0, 0.375] * 10
    history = [{"step": n + 1, "reward": a, "accuracy": a, "format_rate": 1.0, "asked_rate": 1.0, "completion_length": 60 + n} for n, a in enumerate(zigzag)]
    figure = curves_figure(history, evaluations=[{"step": 0, "accuracy": 0.13, "label": "held-out"}, {"step": 20, "accuracy": 0.52, "label": "held-out"}],
                           missing={"kl": "beta is 0, so no reference model"})
    titles = [axis.get_title() for axis in figure.axes]
    assert "KL to reference" not in titles and titles == ["reward", "accuracy", "format rate", "share with a request", "requester tokens"]
    assert all(axis.lines for axis in figure.axes)  # no panel without data
    assert "KL to reference (beta is 0, so no reference model)" in " ".join(text.get_text() for text in figure.texts)
    accuracy = figure.axes[1]
    raw, smooth, held_out = accuracy.lines
    assert raw.get_alpha() < 0.5 and smooth.get_linewidth() > raw.get_linewidth()
    late = list(smooth.get_ydata())[10:]
    assert max(late) - min(late) < 0.2  # the zigzag swings 0.375
    assert list(held_out.get_xdata()) == [0, 20] and held_out.get_label() == "held-out"
    assert smoothed([1.0, None, 1.0])[0] == 1.0  # debiased: the first point is not pulled to 0
    plt.close(figure)
    with_kl = curves_figure([{**row, "kl": 0.01} for row in history])
    assert "KL to reference" in [axis.get_title() for axis in with_kl.axes]
    plt.close(with_kl)


def test_several_runs_share_panels_one_colour_each(tmp_path):
    import matplotlib.pyplot as plt

    from training.run_log import read_history, runs_figure

    request = [{"step": n + 1, "accuracy": 0.5, "asked_rate": 1.0} for n in range(5)]
    inline = [{"step": n + 1, "accuracy": 0.2, "tool_choice_rate": None} for n in range(3)]
    figure = runs_figure({"request": request, "inline": inline})
    assert [axis.get_title() for axis in figure.axes] == ["accuracy", "share with a request"]
    accuracy = figure.axes[0]
    smooth = [line for line in accuracy.lines if line.get_label() in ("request", "inline")]
    assert [line.get_label() for line in smooth] == ["request", "inline"] and smooth[0].get_color() != smooth[1].get_color()
    assert list(smooth[1].get_xdata()) == [1, 2, 3]
    plt.close(figure)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "accuracy": 0.1}\n{"step": 2, "acc\n{"step": 3, "accuracy": 0.3}\n')
    assert [row["step"] for row in read_history(tmp_path)] == [1, 3]  # a line cut by a killed run is skipped


def test_curves_cli_draws_runs_and_names_what_is_missing(tmp_path):
    from tests.test_cli import duet

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text('{"step": 1, "accuracy": 0.1, "reward": 0.2}\n')
    made = duet("curves", str(tmp_path / "a"), str(tmp_path / "b"), "--label", "request", "--label", "inline", "--out", str(tmp_path / "c.png"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    missing = duet("curves", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d.png"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    labels = duet("curves", str(tmp_path / "a"), "--label", "x", "--label", "y", "--out", str(tmp_path / "d.png"))
    assert labels.returncode == 1 and "2 --label for 1 runs" in labels.stderr
