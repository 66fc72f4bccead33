"""The inline mode: the requester writes the program itself between <code> tags, through the same graph."""

import pytest

from agents.protocol import FORMAT_VIOLATIONS, parse_requester_segment, requester_stops
from agents.requester import Requester, RequesterSettings
from agents.sandbox import Sandbox
from graph.build import build_graph
from graph.config import AgentConfig
from graph.run import run_question, stream_question
from tests.scripted import ScriptedBackend
from tests.test_graph import assert_token_exact, fenced

INLINE = [
    # (segment text, kind, program, answer)
    ("I need it. <code>\n```python\nprint(38 * 16)\n```\n</code>", "code", "print(38 * 16)", None),
    ("<code>```py\nprint(1)```</code>", "code", "print(1)", None),
    ("<code>\nprint(2 + 2)\n</code>", "code", "print(2 + 2)", None),
    ("<code>```python\nprint(3)\n</code>", "code", "print(3)", None),
    ("<code>```\n```</code>", "code", None, None),
    ("<code></code>", "code", None, None),
    ("<code>  \n </code>", "code", None, None),
    ("<code>a <code>print(5)</code>", "code", "print(5)", None),
    ("<code>print(6)</code> then <code>print(7)</code>", "code", "print(6)", None),
    ("unclosed <code>\n```python\nprint(8)", "none", None, None),
    ("</code> stray close", "none", None, None),
    ("The answer is \\boxed{608}.", "answer", None, "608"),
    ("maybe \\boxed{7}; check <code>print(7)</code>", "code", "print(7)", None),
    ("<request>multiply 3 by 4</request>", "none", None, None),
    ("\x00\xff garbage <cod", "none", None, None),
    ("", "none", None, None),
]


@pytest.mark.parametrize(("text", "kind", "program", "answer"), INLINE)
def test_inline_segments_parse_without_raising(text, kind, program, answer):
    turn = parse_requester_segment(text, "inline")
    assert (turn.kind, turn.code, turn.answer) == (kind, program, answer)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("unclosed <code>print(1)", "<code> was never closed"),
        ("<code></code>", "the code block is empty"),
        ("<code>a <code>print(1)</code>", "nested"),
        ("<code>print(1)</code><code>print(2)</code>", "second code block"),
        ("</code>", "</code> without <code>"),
    ],
)
def test_inline_problems_are_format_violations(text, problem):
    problems = parse_requester_segment(text, "inline").problems
    assert any(problem in p for p in problems) and FORMAT_VIOLATIONS.intersection(problems)


def test_each_mode_stops_at_its_own_closing_tag():
    assert requester_stops("inline") == ["</code>"] and requester_stops("request") == ["</request>"]


def inline_graph(tokenizer, replies, **overrides):
    config = AgentConfig.model_validate({"requester": {"mode": "inline"}, **overrides})
    backend = ScriptedBackend(tokenizer, replies)
    return build_graph(Requester(backend, config.requester), None, Sandbox(config.sandbox), config), config, backend


async def test_own_program_runs_and_its_output_is_inserted(tokenizer):
    graph, config, backend = inline_graph(
        tokenizer, [f"I need a product.\n<code>\n{fenced('print(48213 * 9123)')}\n</code>", "So it is \\boxed{439847199}."]
    )
    state = await run_question(graph, "What is 48213 * 9123?", config)
    assert state.status == "answered" and state.answer == "439847199" and state.problems == []
    [call] = state.calls
    assert (call.code, call.output.strip(), call.error) == ("print(48213 * 9123)", "439847199", None)
    assert [s.source for s in state.trajectory.segments] == ["prompt", "requester", "inserted", "requester"]
    assert state.trajectory.segments[1].text.endswith("</code>") and "439847199" in state.trajectory.segments[2].text
    # the requester's own code tokens are trained on, the inserted result is not
    mask, ids = state.trajectory.loss_mask, state.trajectory.token_ids
    code_ids = state.trajectory.segments[1].token_ids
    start = len(state.trajectory.segments[0].token_ids)
    assert ids[start : start + len(code_ids)] == code_ids and set(mask[start : start + len(code_ids)]) == {1}
    assert backend.prompts[1] == ids[: len(backend.prompts[1])] and len(backend.prompts[1]) == sum(len(s.token_ids) for s in state.trajectory.segments[:3])
    assert_token_exact(state, tokenizer)


async def test_the_prompt_teaches_the_code_tag(tokenizer):
    requester = Requester(ScriptedBackend(tokenizer, []), RequesterSettings(mode="inline"))
    system, *examples = requester.messages("q")[:-1]
    assert "<code>" in system["content"] and "<request>" not in system["content"]
    assert examples and all("<code>" in m["content"] for m in examples if m["role"] == "assistant")


async def test_a_failing_program_goes_back_to_the_requester_without_repair(tokenizer):
    graph, config, backend = inline_graph(
        tokenizer,
        ["<code>\n" + fenced("print(1 / 0)") + "\n</code>", "Let me fix it. <code>\n" + fenced("print(10 // 3)") + "\n</code>", "\\boxed{3}"],
    )
    state = await run_question(graph, "What is 10 // 3?", config)
    assert state.status == "answered" and state.answer == "3"
    first, second = state.calls
    assert len(first.attempts) == 1 and "ZeroDivisionError" in first.error
    assert "ZeroDivisionError" in state.trajectory.segments[2].text
    assert second.error is None and second.output.strip() == "3"
    assert_token_exact(state, tokenizer)


async def test_an_empty_code_block_reports_back_and_counts_against_the_limit(tokenizer):
    graph, config, _ = inline_graph(tokenizer, ["<code></code>", "<code>print(1)</code>"], limits={"max_calls": 1})
    state = await run_question(graph, "q", config)
    assert state.status == "limit" and len(state.calls) == 1
    assert "holds no program" in state.trajectory.segments[2].text
    assert any("empty" in p for p in state.problems) and any("more than 1" in p for p in state.problems)


async def test_the_stream_shows_the_program_and_its_output(tokenizer):
    graph, config, _ = inline_graph(tokenizer, ["<code>print(6 * 7)</code>", "\\boxed{42}"])
    events = [e async for e in stream_question(graph, "q", config)]
    kinds = [e["event"] for e in events if e["event"] != "reasoning"]
    assert kinds == ["code", "output", "result", "answer", "status", "done"]
    assert events[[e["event"] for e in events].index("code")]["text"] == "print(6 * 7)"


async def test_inline_on_a_tiny_model_keeps_the_trajectory_exact(tiny_backend, tokenizer):
    """Whatever a random model writes in the inline mode, the run ends with a status and the trajectory invariant
    holds."""
    config = AgentConfig.model_validate({"requester": {"mode": "inline", "temperature": 1.0, "max_segment_tokens": 16}, "limits": {"max_total_tokens": 48}})
    graph = build_graph(Requester(tiny_backend, config.requester), None, Sandbox(), config)
    for seed in range(3):
        state = await run_question(graph, "What is 2 + 2?", config, seed=seed)
        assert state.status in ("answered", "no_answer", "limit")
        assert "<code>" in state.trajectory.segments[0].text
        assert_token_exact(state, tokenizer)


def test_a_checkpoint_trained_inline_runs_inline_and_loads_no_coder(tmp_path, tiny_dir):
    import json
    import shutil

    from agents.errors import DuetError
    from agents.models import CHECKPOINT_INFO
    from graph.build import Team

    checkpoint = shutil.copytree(tiny_dir, tmp_path / "checkpoint")
    (checkpoint / CHECKPOINT_INFO).write_text(json.dumps({"requester": {"mode": "inline", "few_shot": False}}))
    unreachable = "openai:http://127.0.0.1:1/v1#coder"  # loading it would fail: it must not be touched
    team = Team(str(checkpoint), unreachable)
    assert team.coder is None and team.requester.mode == "inline" and team.requester.settings.few_shot is False
    team.graph()
    with pytest.raises(DuetError, match="needs a coder"):
        team.graph(mode="request")
    asked = Team(str(checkpoint), str(tiny_dir), AgentConfig.model_validate({"requester": {"mode": "request"}}))
    assert asked.coder is not None and asked.requester.mode == "request"
