"""Cold start: which sampled runs become traces, how a trace becomes a masked trajectory, and `duet sft` on a trace
file producing a checkpoint that `--requester` loads with the prompt it was trained for."""

import asyncio
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents.backends.base import Backend
from agents.coder import Coder, CoderSettings, fenced
from agents.errors import DuetError
from agents.protocol import extract_code
from agents.requester import Requester, RequesterSettings
from agents.tokenizing import encode_text, tokenizer_fingerprint
from duet.configfile import load_config
from graph.state import AgentState, Call, Segment, Trajectory
from tests.scripted import ScriptedBackend
from training.answers import Verdict
from training.config import SFTRunConfig, TraceSettings
from training.data import write_jsonl
from training.sft import as_trace, coder_example, ids_are_ours, keep_traces, read_pairs, read_traces, run_sft, split_response, to_trajectory

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
    exact = {"question": "q", "tokenizer": tokenizer_fingerprint(tokenizer), "segments": [{"source": "requester", "text": "anything", "token_ids": [11, 12, 13]}]}
    assert to_trajectory(exact, requester, tokenizer).segments[-1].token_ids == [11, 12, 13]  # this tokenizer's ids are kept as sampled


def test_sft_on_a_trace_file_lowers_the_loss_and_saves_a_requester_without_few_shot(tmp_path, tiny_dir):
    from agents.models import trained_settings
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
        "agent": {"requester": {"few_shot": False, "max_segment_tokens": 64}, "limits": {"max_calls": 2, "max_total_tokens": 256}},
    })
    checkpoint = run_sft(config)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and losses[-1] < losses[0] / 2, losses
    assert checkpoint.is_symlink() and (checkpoint / "model.safetensors").is_file()
    assert trained_settings(str(checkpoint)) == {"requester": {"few_shot": False, "mode": "request", "max_segment_tokens": 64},
                                                 "limits": {"max_calls": 2, "max_total_tokens": 256},
                                                 "tools": {"registry": [{"name": "coder", "kind": "coder", "target": None, "description": None, "timeout_s": 10.0}], "default": None}}
    team = Team(str(checkpoint), str(tiny_dir))
    assert team.requester.settings.few_shot is False and team.requester.settings.max_segment_tokens == 64
    assert team.config.limits.max_calls == 2 and team.config.limits.max_total_tokens == 256  # the limits it was trained under


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


TEACHER_TEXTS = ["I need the sum.\n<request>add 2 and 3</request>", "\n<result>\n5\n</result>\n", "So \\boxed{5}."]


def teacher_run(tokenizer) -> AgentState:
    """A right run that asked, as a model with `tokenizer` samples it: its own ids, the text they decode to (the last
    segment ends with its end of turn)."""
    def segment(source: str, text: str, ends_turn: bool = False) -> Segment:
        ids = encode_text(tokenizer, text) + ([tokenizer.eos_token_id] if ends_turn else [])
        return Segment(source=source, token_ids=ids, text=tokenizer.decode(ids))

    first, result, answer = TEACHER_TEXTS
    segments = [Segment(source="prompt", token_ids=[1, 2], text="p"), segment("requester", first), segment("inserted", result), segment("requester", answer, True)]
    return AgentState(question="What is 2 + 3?", trajectory=Trajectory(segments=segments), calls=[Call(request="add 2 and 3")], status="answered", answer="5")


def test_traces_written_by_another_tokenizer_are_tokenized_again_segment_by_segment(tiny_backend, foreign_tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    teacher, student = AutoTokenizer.from_pretrained(foreign_tiny_dir), tiny_backend.tokenizer
    row = {"id": "a", "question": "What is 2 + 3?", "answer": "5"}
    [kept] = keep_traces([(row, teacher_run(teacher), RIGHT)], TraceSettings(), teacher)
    assert kept["tokenizer"] == tokenizer_fingerprint(teacher) and kept["tokenizer"]["vocabulary"] != tokenizer_fingerprint(student)["vocabulary"]
    assert [s["text"] for s in kept["segments"]] == TEACHER_TEXTS  # the text as it reads, without the teacher's end of turn
    write_jsonl([kept], tmp_path / "traces.jsonl")
    [trace] = read_traces(tmp_path / "traces.jsonl")  # as traces.file reads it

    requester = Requester(tiny_backend, RequesterSettings(few_shot=False))
    trajectory = to_trajectory(trace, requester, student, tokenizer_fingerprint(student))
    written = trajectory.segments[1:]
    assert [s.source for s in written] == ["requester", "inserted", "requester"]
    expected = [encode_text(student, TEACHER_TEXTS[0]), encode_text(student, TEACHER_TEXTS[1]), [*encode_text(student, TEACHER_TEXTS[2]), student.eos_token_id]]
    assert [s.token_ids for s in written] == expected != [s["token_ids"] for s in trace["segments"]]
    assert trajectory.loss_mask == [0] * len(trajectory.segments[0].token_ids) + [1] * len(expected[0]) + [0] * len(expected[1]) + [1] * len(expected[2])
    assert student.decode([t for s in written for t in s.token_ids]) == "".join(TEACHER_TEXTS) + student.eos_token  # one end of turn, the student's
    assert ids_are_ours(trace, student) is False

    # the teacher's own tokenizer (or any with the same vocabulary, under another name) keeps the ids as sampled
    as_teacher = Requester(ScriptedBackend(teacher, []), RequesterSettings(few_shot=False))
    assert [s.token_ids for s in to_trajectory(trace, as_teacher, teacher).segments[1:]] == [s["token_ids"] for s in trace["segments"]]


def test_traces_that_do_not_name_their_tokenizer_are_checked_against_the_model(tiny_backend, foreign_tiny_dir):
    """Files written before traces named their tokenizer: the model's own ids decode to the text and are kept; a
    foreign tokenizer's are refused in one line (their text holds the writer's end of turn, which nothing names)."""
    from transformers import AutoTokenizer

    teacher, student = AutoTokenizer.from_pretrained(foreign_tiny_dir), tiny_backend.tokenizer
    row = {"id": "a", "question": "What is 2 + 3?", "answer": "5"}
    requester = Requester(tiny_backend, RequesterSettings(few_shot=False))
    own = as_trace(row, teacher_run(student))
    assert "tokenizer" not in own and ids_are_ours(own, student) is True
    assert [s.token_ids for s in to_trajectory(own, requester, student).segments[1:]] == [s["token_ids"] for s in own["segments"]]
    foreign = as_trace(row, teacher_run(teacher))
    with pytest.raises(DuetError, match="not this model's tokenizer's .* sample the traces again"):
        to_trajectory(foreign, requester, student)
    text_only = {**foreign, "segments": [{k: v for k, v in s.items() if k != "token_ids"} for s in foreign["segments"]]}
    assert ids_are_ours(text_only, student) is None and to_trajectory(text_only, requester, student).segments[1].token_ids == encode_text(student, TEACHER_TEXTS[0])


def test_a_teacher_samples_under_the_students_settings_and_its_traces_name_its_tokenizer(tmp_path, tiny_dir, foreign_tiny_dir, monkeypatch):
    """The teacher is a duet checkpoint trained inline with long segments: its traces are still sampled in the mode
    and limits the student is trained for, and written with the teacher's tokenizer named."""
    import shutil

    import torch
    from transformers import AutoTokenizer

    import training.sft as sft
    from graph.build import as_trained
    from training.policy import Policy

    teacher = tmp_path / "teacher"
    shutil.copytree(foreign_tiny_dir, teacher)
    (teacher / "duet.json").write_text(json.dumps({"requester": {"mode": "inline", "max_segment_tokens": 200}, "limits": {"max_total_tokens": 400}}))
    seen = {}

    def keep(sampled, settings, tokenizer=None):
        seen["tokenizer"], seen["states"] = tokenizer, [state for _, state, _ in sampled]
        return []

    monkeypatch.setattr(sft, "keep_traces", keep)
    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 2 + 3?", "answer": "5"}], data)
    config = load_config(SFTRunConfig, None, {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"teacher": str(teacher), "samples_per_question": 2, "temperatures": [1.0], "few_shot": False},
        "sft": {"output_dir": str(tmp_path / "sft"), "report_to": ["none"]},
        "agent": {"requester": {"max_segment_tokens": 3}, "limits": {"max_total_tokens": 5}},
    })
    policy = Policy(config.model, device=torch.device("cpu"))
    sft.collect_traces(config, policy, [{"id": "x", "question": "What is 2 + 3?", "answer": "5"}], as_trained(config.agent, policy.spec))
    assert tokenizer_fingerprint(seen["tokenizer"]) == tokenizer_fingerprint(AutoTokenizer.from_pretrained(teacher))
    assert len(seen["states"]) == 2 and all(s.trajectory.count("requester", "inserted") <= 5 for s in seen["states"])
    as_student = Requester(ScriptedBackend(seen["tokenizer"], []), RequesterSettings(few_shot=False, mode="request"))
    assert seen["states"][0].trajectory.segments[0].token_ids == as_student.prompt_ids("What is 2 + 3?")[0]  # the request mode's prompt


def test_sft_on_a_file_another_tokenizer_wrote_trains_on_its_text_and_says_so(tmp_path, tiny_dir, foreign_tiny_dir, capsys):
    from transformers import AutoTokenizer

    teacher = AutoTokenizer.from_pretrained(foreign_tiny_dir)
    rows = [{"id": f"r{n}", "question": f"What is {n} + 3?", "answer": str(n + 3)} for n in range(2)]
    traces = tmp_path / "traces.jsonl"
    write_jsonl([as_trace(row, teacher_run(teacher).model_copy(update={"question": row["question"]}), teacher) for row in rows], traces)
    data = tmp_path / "questions.jsonl"
    write_jsonl(rows, data)
    config = load_config(SFTRunConfig, None, {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(data)]},
        "traces": {"file": str(traces)},
        "sft": {"output_dir": str(tmp_path / "sft"), "num_train_epochs": 1, "per_device_train_batch_size": 2, "report_to": ["none"]},
        "agent": {"requester": {"few_shot": False}},
    })
    assert (run_sft(config) / "model.safetensors").is_file()
    assert "tokenizing 2 traces again from their text: another tokenizer wrote their ids" in capsys.readouterr().err


class ChattingScript(ScriptedBackend):
    """A scripted backend that chats as real backends do: the chat's token ids through generate, where they are seen."""

    chat = Backend.chat


def test_a_coder_pair_becomes_the_coders_own_prompt_then_its_fenced_program_and_end_of_turn(tiny_backend):
    tokenizer = tiny_backend.tokenizer
    pair = {"request": "subtract 5849732.97 from 798040184.92", "program": "from decimal import Decimal\nprint(Decimal('798040184.92') - Decimal('5849732.97'))"}
    example = coder_example(pair, Coder(None), tokenizer)
    live = ChattingScript(tokenizer, [fenced(pair["program"])])
    written = asyncio.run(Coder(live).write(pair["request"]))
    prompt, reply = example.segments
    assert prompt.token_ids == live.prompts[0]  # token for token what Coder.write sends
    assert reply.token_ids == [*tokenizer.encode(fenced(pair["program"]), add_special_tokens=False), tokenizer.eos_token_id]
    assert extract_code(written) == pair["program"]
    assert example.loss_mask == [0] * len(prompt.token_ids) + [1] * len(reply.token_ids)
    shown = coder_example({**pair, "question": "How much is left?"}, Coder(None, CoderSettings(show_question=True)), tokenizer)
    assert "How much is left?" in tokenizer.decode(shown.segments[0].token_ids)  # trained for the coder settings it will run under


def coder_recipe(tmp_path, tiny_dir, **extra) -> dict:
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl([{"request": f"add {n} and {n}", "program": f"print({n} + {n})"} for n in range(4)], pairs)
    return {
        "role": "coder", "model": {"requester": str(tmp_path / "runs/never-made/checkpoint-latest"), "coder": str(tiny_dir)},
        "traces": {"file": str(pairs)},
        "sft": {"output_dir": str(tmp_path / "sft"), "learning_rate": 0.01, "num_train_epochs": 6, "per_device_train_batch_size": 2,
                "lr_scheduler_type": "constant", "report_to": ["none"]},
        **extra,
    }


def test_a_coder_cold_start_trains_the_coder_that_eval_then_loads(tmp_path, tiny_dir):
    from agents.models import trained_settings
    from graph.build import Team
    from training.preflight import check_recipe

    config = load_config(SFTRunConfig, None, coder_recipe(tmp_path, tiny_dir))
    check_recipe(config)  # no data, and a requester that does not exist: a coder run needs neither
    checkpoint = run_sft(config)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and losses[-1] < losses[0] / 2, losses
    assert trained_settings(str(checkpoint)) == {}  # nothing a requester would take as its own settings
    team = Team(str(tiny_dir), str(checkpoint))
    trained, untrained = load_file(checkpoint / "model.safetensors"), load_file(tiny_dir / "model.safetensors")
    loaded = team.coder.backend.model.state_dict()
    changed = [key for key in trained if not torch.equal(trained[key], untrained[key])]
    assert changed and all(torch.equal(loaded[key].cpu(), trained[key]) for key in changed)  # the coder runs the trained weights
    assert not torch.equal(team.requester.backend.model.state_dict()[changed[0]].cpu(), trained[changed[0]])  # and only the coder


@pytest.mark.parametrize(("change", "message"), [
    ({"traces": {}}, "role coder trains on traces.file alone"),
    ({"traces": {"file": "PAIRS", "samples_per_question": 2}}, "role coder trains on traces.file alone"),
    ({"traces": {"file": "PAIRS", "demonstrations": "PAIRS"}}, "role coder trains on traces.file alone"),
    ({"agent": {"requester": {"mode": "inline"}}}, "agent.requester \\(and --mode\\) would not be used"),
    ({"role": "requester", "traces": {}}, "give data.train to sample traces from, or traces.file"),
])
def test_a_coder_cold_start_refuses_settings_it_would_not_use(tmp_path, tiny_dir, change, message):
    recipe = coder_recipe(tmp_path, tiny_dir)
    pairs = recipe["traces"]["file"]
    for key, value in change.items():
        recipe[key] = {k: pairs if v == "PAIRS" else v for k, v in value.items()} if isinstance(value, dict) else value
    with pytest.raises(DuetError, match=f"^config: .*{message}"):
        load_config(SFTRunConfig, None, recipe)


def test_a_missing_pair_file_names_the_command_that_writes_it(tmp_path, tiny_dir):
    from training.preflight import check_recipe

    recipe = tmp_path / "coder-sft.yaml"
    recipe.write_text("# duet data coder-pairs data/train.jsonl --out data/pairs.jsonl\nrole: coder\ntraces: {file: data/pairs.jsonl}\n"
                      "sft: {output_dir: runs/coder}\n")
    config = load_config(SFTRunConfig, recipe)
    with pytest.raises(DuetError, match="traces.file: no file at data/pairs.jsonl .*make it first: duet data coder-pairs data/train.jsonl"):
        check_recipe(config, recipe)


@pytest.mark.parametrize(("row", "message"), [
    ({"request": "add 1 and 2"}, "needs a request and a program"),
    ({"request": "", "program": "print(3)"}, "needs a request and a program"),
    ({"request": "add 1 and 2", "program": 3}, "needs a request and a program"),
    ([1, 2], "not a JSON object"),
    ({"request": "add 1 and 2", "program": "print(3)\n```\nprint(4)"}, "does not survive its fence"),
    ({"request": "add 1 and 2", "program": "\n".join(["print(3)"] * 200)}, "more than agent.coder.max_new_tokens"),
])
def test_malformed_coder_pairs_are_one_line_errors_with_their_line(tmp_path, tiny_backend, row, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"request": "add 1 and 2", "program": "print(3)"}) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(DuetError, match=f"line 3.*{message}"):
        read_pairs(pairs, CoderSettings(), tiny_backend.tokenizer)


def test_pairs_are_read_as_the_coder_sees_them(tmp_path, tiny_backend):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl([{"request": "  add 1 and 2\n", "program": "print(1 + 2)"}], pairs)
    assert read_pairs(pairs, CoderSettings(), tiny_backend.tokenizer)[0]["request"] == "add 1 and 2"  # as the protocol strips it
    with pytest.raises(DuetError, match="show_question shows the coder the question, and this pair has none"):
        read_pairs(pairs, CoderSettings(show_question=True), tiny_backend.tokenizer)
    with pytest.raises(DuetError, match="this is a coder's pair .* train it with role: coder"):
        read_traces(pairs)


def test_a_served_coder_cannot_be_fine_tuned_and_the_error_names_the_coder():
    from training.config import ModelSettings
    from training.policy import Policy

    with pytest.raises(DuetError, match="model.coder 'openai:http://localhost:9/v1#m': training updates the coder's weights"):
        Policy(ModelSettings(coder="openai:http://localhost:9/v1#m"), torch.device("cpu"), role="coder")
