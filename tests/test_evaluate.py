"""Evaluation metrics on hand-made records, resume after an interruption, and the difficulty filter."""

import json

import pytest

from agents.coder import Coder
from agents.requester import Requester, RequesterSettings
from agents.sandbox import Sandbox
from graph.build import build_graph
from graph.config import AgentConfig
from tests.scripted import ScriptedBackend
from training.data import write_jsonl
from training.difficulty import filter_and_order, graph_answerer, measure_pass_rates
from training.answers import Verdict
from training.evaluate import (
    EvalConfig, Record, compare_table, evaluate, markdown_table, read_records, reproduce_command, summarize, templates_table, write_report,
)


def record(**fields) -> Record:
    base = dict(dataset="d", id="1", mode="coder", question="q", gold="2", answer="2", correct=True, status="answered", well_formed=True, requests=1,
                attempts=1, failed_executions=0, executions=1, calls_with_failure=0, calls_recovered=0, tokens=100, seconds=2.0)
    return Record(**{**base, **fields})


def test_metrics_from_hand_made_records():
    records = [
        record(id="1"),
        record(id="2", correct=False, answer=None, status="no_answer", well_formed=False, requests=0, attempts=0, executions=0, tokens=50, seconds=1.0),
        record(id="3", well_formed=False, requests=2, attempts=3, failed_executions=1, executions=3, calls_with_failure=1, calls_recovered=1, tokens=300, seconds=3.0),
        record(id="4", correct=False, requests=1, attempts=2, failed_executions=2, executions=2, calls_with_failure=1, calls_recovered=0, tokens=150, seconds=2.0),
        record(id="1", mode="alone", correct=False, requests=1, attempts=1, executions=0),
    ]
    coder, alone = summarize(records)[1], summarize(records)[0]
    assert (coder.mode, coder.questions, alone.mode, alone.questions) == ("coder", 4, "alone", 1)
    assert coder.accuracy == 0.5 and coder.format_rate == 0.5 and coder.answered_rate == 0.75 and coder.asked_rate == 0.75
    assert summarize([record(well_formed=None), record(id="2")])[0].format_rate is None  # records that predate it
    assert coder.requests_per_question == 1.0
    assert coder.executor_error_rate == pytest.approx(3 / 6)
    assert coder.recovery_rate == 0.5
    assert coder.right_after_failure == 0.5  # ids 3 (right) and 4 (wrong) had a failed program
    assert coder.tokens_per_question == 150 and coder.seconds_per_question == 2.0
    assert alone.recovery_rate is None and alone.executor_error_rate == 0.0
    assert "| d | coder | 4 | 50.0% | 50.0% | 75.0% | 0.0% |" in markdown_table(summarize(records))


def test_accuracy_by_template_counts_right_answers_per_generator_template():
    records = [record(id="1", template="product"), record(id="2", template="product", correct=False), record(id="3", template="sell_some"),
               record(id="4"), record(id="1", mode="alone", template="product", correct=False)]
    alone, coder = summarize(records)
    assert coder.by_template == {"product": (1, 2), "sell_some": (1, 1)} and alone.by_template == {"product": (0, 1)}
    table = templates_table([alone, coder])
    assert "| product | 0 of 1 | 1 of 2 |" in table and "| sell_some |  | 1 of 1 |" in table
    assert templates_table(summarize([record()])) == ""  # rows without a template: no section


class ScriptedTeam:
    """Stands in for Team: a graph per mode over scripted models that answer each question's gold number (in the
    inline mode, after printing it with a program of their own)."""

    def __init__(self, tokenizer, rows):
        self.asked = []
        self.answers = {row["question"]: row["answer"] for row in rows}
        self.tokenizer = tokenizer

    def graph(self, with_coder=True, mode="request"):
        team = self

        class Answering(ScriptedBackend):
            async def generate(self, requests):
                context = team.tokenizer.decode(requests[0].prompt_ids[-60:])
                question = next(q for q in team.answers if q in context)
                team.asked.append(question)
                answer = team.answers[question]
                self.replies = [f"<code>print({answer})</code>" if mode == "inline" and "<result>" not in context.split(question)[-1] else f"\\boxed{{{answer}}}"]
                return await super().generate(requests)

        config = AgentConfig()
        requester = Requester(Answering(self.tokenizer, []), RequesterSettings(mode=mode))
        return build_graph(requester, Coder(ScriptedBackend(self.tokenizer, [])) if with_coder else None, Sandbox(), config)

    async def aclose(self):
        pass


async def test_one_report_compares_coder_inline_and_alone(tokenizer, tmp_path):
    rows = [{"id": f"r{i}", "question": f"What is {i} times 7, question {i}?", "answer": str(7 * i), "source": "test", "metadata": {}} for i in range(3)]
    data = tmp_path / "set.jsonl"
    write_jsonl(rows, data)
    out = tmp_path / "report"
    summaries, settings = await evaluate(EvalConfig(data=[data], modes=["coder", "inline", "alone"]), out, team=ScriptedTeam(tokenizer, rows))
    by_mode = {s.mode: s for s in summaries}
    assert sorted(by_mode) == ["alone", "coder", "inline"] and all(s.accuracy == 1.0 for s in summaries)
    assert by_mode["inline"].requests_per_question == 1.0 and by_mode["coder"].requests_per_question == 0.0
    records = [r for r in read_records(out / "records.jsonl") if r.mode == "inline"]
    assert len(records) == 3 and all(r.executions == 1 and r.failed_executions == 0 for r in records)
    write_report(summaries, out, reproduce_command(settings, out))
    report = (out / "report.md").read_text()
    assert "| set | inline | 3 |" in report and "| set | coder | 3 |" in report and "| set | alone | 3 |" in report
    assert "--modes coder,inline,alone" in report and "inline: the requester writes the program itself" in report


async def test_an_interrupted_eval_resumes_where_it_stopped(tokenizer, tmp_path):
    rows = [{"id": f"r{i}", "question": f"What is {i} plus {i}, question {i}?", "answer": str(2 * i), "source": "test", "metadata": {}} for i in range(4)]
    data = tmp_path / "set.jsonl"
    write_jsonl(rows, data)
    out = tmp_path / "report"
    out.mkdir()
    finished = [record(dataset="set", id=f"r{i}", mode="coder", question=rows[i]["question"], gold=rows[i]["answer"]) for i in range(2)]
    (out / "records.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in finished) + '{"dataset": "set", "id": "r2", "mo')
    team = ScriptedTeam(tokenizer, rows)
    summaries, settings = await evaluate(EvalConfig(data=[data], modes=["coder"]), out, team=team)
    assert sorted(team.asked) == [rows[2]["question"], rows[3]["question"]]  # only what was not finished
    assert summaries[0].questions == 4 and summaries[0].accuracy == 1.0
    assert len(read_records(out / "records.jsonl")) == 4
    write_report(summaries, out, reproduce_command(settings, out))
    report = json.loads((out / "report.json").read_text())
    assert f"--data {data}" in report["command"] and "--modes coder" in report["command"] and (out / "agent.yaml").is_file()
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "requests_per_question.png").is_file()
    assert "| set | coder | 100.0% | 100.0% | +0.0% |" in compare_table(out, out)


def test_filter_drops_always_solved_and_orders_easy_to_hard():
    rows = [{"id": name} for name in "abcdef"]
    rates = {"a": 1.0, "b": 0.25, "c": 0.75, "d": 0.0, "e": 0.75}
    assert [row["id"] for row in filter_and_order(rows, rates)] == ["c", "e", "b", "d"]


async def test_pass_rates_count_k_attempts_per_question():
    rows = [{"id": "easy"}, {"id": "half"}, {"id": "never"}]
    rules = {"easy": lambda attempt: True, "half": lambda attempt: attempt % 2 == 0, "never": lambda attempt: False}

    async def solve(row, attempt):
        return rules[row["id"]](attempt)

    assert await measure_pass_rates(rows, solve, k=4) == {"easy": 1.0, "half": 0.5, "never": 0.0}


async def test_each_attempt_at_a_question_samples_with_its_own_seed():
    """k attempts with one seed would draw the same tokens k times: every pass rate would be 0 or 1."""
    from graph.config import AgentConfig

    seen = []

    class Graph:
        async def ainvoke(self, values, config):
            seen.append((values["question"], values["seed"]))
            return {"question": values["question"], "answer": "7", "status": "answered"}

    solve = graph_answerer(Graph(), AgentConfig())
    rows = [{"id": "a", "question": "q?", "answer": "7"}, {"id": "b", "question": "q?", "answer": "7"}]
    assert await measure_pass_rates(rows, solve, k=3) == {"a": 1.0, "b": 1.0}
    first = list(seen)
    assert len({seed for _, seed in first}) == 6
    seen.clear()
    await measure_pass_rates(rows, solve, k=3)
    assert sorted(seen) == sorted(first)


def test_a_record_is_read_off_a_hand_made_run():
    from agents.sandbox import ExecutionResult
    from graph.state import AgentState, Call, CodeAttempt, Segment, Trajectory
    from training.evaluate import record_of

    def ran(ok):
        return ExecutionResult(stdout="5\n" if ok else "", stderr="", error=None if ok else "NameError: x", exit_code=0 if ok else 1, duration_s=0.01)

    state = AgentState(
        question="q", answer="5", status="answered",
        trajectory=Trajectory(segments=[Segment(source="prompt", token_ids=[1, 2, 3], text="p"), Segment(source="requester", token_ids=[4, 5], text="r"),
                                        Segment(source="inserted", token_ids=[6], text="i"), Segment(source="requester", token_ids=[7], text="r")]),
        calls=[
            Call(request="a", attempts=[CodeAttempt(reply="x", code="x", result=ran(False), error="NameError: x"), CodeAttempt(reply="y", code="y", result=ran(True))]),
            Call(request="b", attempts=[CodeAttempt(reply="z", code="z", result=ran(False), error="NameError: x")] * 3),
            Call(request="", attempts=[CodeAttempt(reply="", code=None, error="empty request")]),
        ],
    )
    row = {"id": "7", "question": "q", "answer": "5", "source": "big-value"}
    made = record_of("set", row, "coder", state, 1.5, Verdict(correct=True))
    assert (made.correct, made.requests, made.attempts, made.executions, made.failed_executions) == (True, 3, 6, 5, 4)
    assert (made.calls_with_failure, made.calls_recovered, made.tokens) == (2, 1, 4)
    assert made.template is None
    assert record_of("set", {**row, "metadata": {"template": "product"}}, "coder", state, 1.5, Verdict(correct=True)).template == "product"


async def test_a_resume_with_other_settings_is_refused(tokenizer, tmp_path):
    from agents.errors import DuetError

    rows = [{"id": "r0", "question": "What is 0 plus 0, question 0?", "answer": "0", "source": "test", "metadata": {}}]
    data = tmp_path / "set.jsonl"
    write_jsonl(rows, data)
    out = tmp_path / "report"
    await evaluate(EvalConfig(data=[data], modes=["coder"]), out, team=ScriptedTeam(tokenizer, rows))
    with pytest.raises(DuetError, match="another coder"):
        await evaluate(EvalConfig(data=[data], modes=["coder"], coder="openai:http://127.0.0.1:1/v1#x"), out, team=ScriptedTeam(tokenizer, rows))
    with pytest.raises(DuetError, match="another agent"):
        await evaluate(EvalConfig(data=[data], modes=["coder"], agent={"limits": {"max_calls": 1}}), out, team=ScriptedTeam(tokenizer, rows))
    summaries, _ = await evaluate(EvalConfig(data=[data], modes=["coder", "alone"]), out, team=ScriptedTeam(tokenizer, rows))
    assert {s.mode for s in summaries} == {"coder", "alone"}  # adding a mode is not a change of settings


async def test_files_with_the_same_name_keep_their_own_records(tokenizer, tmp_path):
    first = [{"id": "x", "question": "What is 1 plus 1, question 1?", "answer": "2", "source": "test", "metadata": {}}]
    second = [{"id": "x", "question": "What is 2 plus 2, question 2?", "answer": "4", "source": "test", "metadata": {}}]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    write_jsonl(first, tmp_path / "a" / "gsm.jsonl")
    write_jsonl(second, tmp_path / "b" / "gsm.jsonl")
    team = ScriptedTeam(tokenizer, first + second)
    summaries, settings = await evaluate(EvalConfig(data=[tmp_path / "a" / "gsm.jsonl", tmp_path / "b" / "gsm.jsonl"], modes=["coder"]), tmp_path / "out", team=team)
    assert sorted(settings.datasets) == ["b/gsm", "gsm"] and len(summaries) == 2 and len(team.asked) == 2
    records = {r.dataset: r for r in read_records(tmp_path / "out" / "records.jsonl")}
    assert records["gsm"].gold == "2" and records["b/gsm"].gold == "4"


async def test_backend_errors_are_counted_and_retried_on_resume(tokenizer, tmp_path):
    rows = [{"id": f"r{i}", "question": f"What is {i} plus {i}, question {i}?", "answer": str(2 * i), "source": "test", "metadata": {}} for i in range(3)]
    data = tmp_path / "set.jsonl"
    write_jsonl(rows, data)
    out = tmp_path / "report"
    out.mkdir()
    failed = record(dataset="set", id="r1", question=rows[1]["question"], gold="2", answer=None, correct=False, status="error")
    (out / "records.jsonl").write_text(record(dataset="set", id="r0", question=rows[0]["question"], gold="0").model_dump_json() + "\n" + failed.model_dump_json() + "\n")
    assert summarize(read_records(out / "records.jsonl"))[0].error_rate == 0.5
    team = ScriptedTeam(tokenizer, rows)
    summaries, _ = await evaluate(EvalConfig(data=[data], modes=["coder"]), out, team=team)
    assert sorted(team.asked) == [rows[1]["question"], rows[2]["question"]]
    assert summaries[0].questions == 3 and summaries[0].error_rate == 0.0 and summaries[0].accuracy == 1.0


async def test_eval_data_names_a_config_and_split_of_a_dataset_folder(tokenizer, tmp_path):
    """`--data '{path: FOLDER, name: main, split: test}'`: the config's rows, gold answers taken from the `####` line,
    a key and a reproduce command that keep the config, and a resume that recognises the same source."""
    from training.data import parse_source

    root = tmp_path / "gsm8k"
    solutions = {"main": "6 * 7 = <<6*7=42>>42\n#### 42", "socratic": "How much? 6 * 7 = 42\n#### 42"}
    for config, solution in solutions.items():
        (root / config).mkdir(parents=True)
        write_jsonl([{"question": f"What is 6 times 7 ({config})?", "answer": solution}], root / config / "test.jsonl")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: test\n    path: {c}/test.jsonl\n" for c in solutions) + "---\n")
    source = parse_source(f"{{path: {root}, name: main, split: test}}")
    out = tmp_path / "report"
    team = ScriptedTeam(tokenizer, [{"question": "What is 6 times 7 (main)?", "answer": "42"}])
    summaries, settings = await evaluate(EvalConfig(data=[source], modes=["coder"]), out, team=team)
    assert [(s.dataset, s.accuracy) for s in summaries] == [("gsm8k-main-test", 1.0)]
    assert [r.gold for r in read_records(out / "records.jsonl")] == ["42"]
    assert list(settings.datasets.values()) == [f"{{path: {root}, name: main, split: test}}"]
    assert f"--data '{{path: {root}, name: main, split: test}}'" in reproduce_command(settings, out)
    again = ScriptedTeam(tokenizer, [])
    await evaluate(EvalConfig(data=[parse_source(f"{{path: {root}, name: main, split: test}}")], modes=["coder"]), out, team=again)
    assert again.asked == []
