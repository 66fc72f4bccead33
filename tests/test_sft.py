"""Cold start: which sampled runs become traces, how a trace becomes a masked trajectory, and `duet sft` on a trace
file producing a checkpoint that `--requester` loads with the prompt it was trained for."""

import json
from pathlib import Path

import pytest

from agents.requester import Requester, RequesterSettings
from duet.configfile import load_config
from graph.state import AgentState, Call, Segment, Trajectory
from training.answers import Verdict
from training.config import SFTRunConfig, TraceSettings
from training.data import write_jsonl
from training.sft import keep_traces, run_sft, split_response, to_trajectory

RIGHT, WRONG = Verdict(correct=True), Verdict(correct=False, reason="different value")


def sampled_run(text: str, asked: bool) -> AgentState:
    segments = [Segment(source="prompt", token_ids=[1, 2], text="p"), Segment(source="requester", token_ids=[len(text), 7], text=text)]
    return AgentState(question="q", trajectory=Trajectory(segments=segments), calls=[Call(request="add")] if asked else [], status="answered")


def test_split_response_marks_result_blocks_as_inserted_and_loses_no_text():
    response = "I need the sum.\n<request>add 2 and 3</request>\n<result>\n5\n</result>\nSo \\boxed{5}.<result>6</result>"
    pieces = split_response(response)
    assert "".join(p["text"] for p in pieces) == response
    assert [p["source"] for p in pieces] == ["requester", "inserted", "requester", "inserted"]
    assert pieces[1]["text"] == "\n<result>\n5\n</result>\n" and pieces[2]["text"] == "So \\boxed{5}."


def test_keep_traces_keeps_right_runs_that_asked_once_each_up_to_the_limit():
    row, other = {"id": "a", "question": "q", "answer": "5"}, {"id": "b", "question": "r", "answer": "6"}
    sampled = [
        (row, sampled_run("wrong but asked", asked=True), WRONG),
        (row, sampled_run("right, never asked", asked=False), RIGHT),
        (row, sampled_run("right and asked", asked=True), RIGHT),
        (row, sampled_run("right and asked", asked=True), RIGHT),  # the same run again
        (row, sampled_run("right, asked, other words", asked=True), RIGHT),
        (row, sampled_run("a third right one", asked=True), RIGHT),
        (other, sampled_run("right and asked", asked=True), RIGHT),
    ]
    kept = keep_traces(sampled, TraceSettings(require_request=True, max_per_question=2))
    assert [(t["id"], t["segments"][-1]["text"]) for t in kept] == [("a", "right and asked"), ("a", "right, asked, other words"), ("b", "right and asked")]
    assert all(s["source"] != "prompt" for t in kept for s in t["segments"])  # the prompt is rebuilt for the settings trained
    lenient = keep_traces(sampled, TraceSettings(require_request=False, max_per_question=5))
    assert "right, never asked" in [t["segments"][-1]["text"] for t in lenient]


def test_a_trace_becomes_a_trajectory_trained_only_on_the_requesters_tokens(tiny_backend):
    requester = Requester(tiny_backend, RequesterSettings(few_shot=False))
    tokenizer = tiny_backend.tokenizer
    trace = {"question": "What is 2 + 3?", "response": "I need this.\n<request>add 2 and 3</request>\n<result>\n5\n</result>\nSo \\boxed{5}."}
    trajectory = to_trajectory(trace, requester, tokenizer)
    sources = [s.source for s in trajectory.segments]
    assert sources == ["prompt", "requester", "inserted", "requester"]
    assert trajectory.segments[0].token_ids == requester.prompt_ids("What is 2 + 3?")[0]
    assert trajectory.segments[-1].token_ids[-1] == tokenizer.eos_token_id  # the model learns to stop after its answer
    expected = [float(s.source == "requester") for s in trajectory.segments for _ in s.token_ids]
    assert trajectory.loss_mask == expected and sum(expected) > 0
    exact = {"question": "q", "segments": [{"source": "requester", "text": "anything", "token_ids": [11, 12, 13]}]}
    assert to_trajectory(exact, requester, tokenizer).segments[-1].token_ids == [11, 12, 13]  # recorded ids are kept as sampled


def test_sft_on_a_trace_file_lowers_the_loss_and_saves_a_requester_without_few_shot(tmp_path, tiny_dir):
    from agents.models import trained_requester_settings
    from graph.build import Team

    traces = tmp_path / "traces.jsonl"
    write_jsonl([{"question": f"What is {n} + {n}?", "response": f"<request>add {n} and {n}</request>\n<result>\n{2 * n}\n</result>\n\\boxed{{{2 * n}}}"} for n in range(4)], traces)
    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 1 + 1?", "answer": "2"}], data)
    config = load_config(SFTRunConfig, None, {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"file": str(traces)},
        "sft": {"output_dir": str(tmp_path / "sft"), "learning_rate": 0.01, "num_train_epochs": 6, "per_device_train_batch_size": 2,
                "lr_scheduler_type": "constant", "report_to": ["none"]},
        "agent": {"requester": {"few_shot": False}},
    })
    checkpoint = run_sft(config)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and losses[-1] < losses[0] / 2, losses
    assert checkpoint.is_symlink() and (checkpoint / "model.safetensors").is_file()
    assert trained_requester_settings(str(checkpoint)) == {"few_shot": False, "mode": "request"}
    team = Team(str(checkpoint), str(tiny_dir))
    assert team.requester.settings.few_shot is False


def test_demonstrations_are_trained_on_with_the_sampled_traces(tmp_path, tiny_dir):
    """The tiny model never answers right, so without the demonstrations there is nothing to train on."""
    demonstrations = tmp_path / "demonstrations.jsonl"
    write_jsonl([{"question": f"What is {n} - 1?", "response": f"<request>subtract 1 from {n}</request>\n<result>\n{n - 1}\n</result>\n\\boxed{{{n - 1}}}"} for n in (5, 9, 14)], demonstrations)
    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 123456789 * 987654321?", "answer": "121932631112635269"}], data)
    config = load_config(SFTRunConfig, None, {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"samples_per_question": 2, "temperatures": [1.0], "demonstrations": str(demonstrations), "save_to": str(tmp_path / "kept.jsonl")},
        "sft": {"output_dir": str(tmp_path / "sft"), "num_train_epochs": 2, "per_device_train_batch_size": 2, "report_to": ["none"]},
        "agent": {"requester": {"max_segment_tokens": 8}, "limits": {"max_total_tokens": 8}},
    })
    assert run_sft(config).is_symlink()
    assert (tmp_path / "kept.jsonl").read_text() == ""  # the sampled runs kept nothing; save_to holds only those
    steps = [json.loads(line)["step"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # three demonstrations in batches of two, twice


def test_a_missing_demonstrations_file_stops_sft_before_any_sampling(tmp_path, tiny_dir):
    from agents.errors import DuetError

    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 1 + 1?", "answer": "2"}], data)
    config = load_config(SFTRunConfig, None, {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"demonstrations": str(tmp_path / "absent.jsonl"), "save_to": str(tmp_path / "kept.jsonl")},
        "sft": {"output_dir": str(tmp_path / "sft"), "report_to": ["none"]},
    })
    with pytest.raises(DuetError, match="absent.jsonl"):
        run_sft(config)
    assert not (tmp_path / "kept.jsonl").exists()


def test_sft_without_any_kept_trace_says_what_to_do(tmp_path, tiny_dir):
    from agents.errors import DuetError

    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 123456789 * 987654321?", "answer": "121932631112635269"}], data)
    config = load_config(SFTRunConfig, None, {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"samples_per_question": 2, "temperatures": [1.0]},
        "sft": {"output_dir": str(tmp_path / "sft"), "report_to": ["none"]},
        "agent": {"requester": {"max_segment_tokens": 8}, "limits": {"max_total_tokens": 8}},
    })
    with pytest.raises(DuetError, match="no traces to train on"):
        run_sft(config)
    assert not (tmp_path / "sft" / "checkpoint-latest").exists()


def test_a_right_answer_with_format_problems_is_not_kept():
    row = {"id": "a", "question": "q", "answer": "5"}
    well = sampled_run("right and tidy", asked=True)
    untidy = sampled_run("right, then more text", asked=True).model_copy(update={"problems": ["text after the answer was ignored"]})
    cut = sampled_run("right but cut off", asked=True).model_copy(update={"status": "limit"})
    kept = keep_traces([(row, untidy, RIGHT), (row, cut, RIGHT), (row, well, RIGHT)], TraceSettings(require_request=True, max_per_question=5))
    assert [t["segments"][-1]["text"] for t in kept] == ["right and tidy"]
