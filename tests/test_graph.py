"""The graph's routing, limits and trajectory, driven down exact paths by scripted models and a real sandbox."""

import asyncio


from agents.coder import Coder
from agents.requester import Requester
from agents.sandbox import Sandbox
from agents.tokenizing import encode_text
from graph.build import build_graph
from graph.config import AgentConfig
from graph.run import run_batch, run_question, stream_question
from tests.scripted import ScriptedBackend


def make_graph(tokenizer, replies, code_replies=(), fail_after=None, **overrides):
    config = AgentConfig.model_validate(overrides)
    requester_backend = ScriptedBackend(tokenizer, replies, fail_after=fail_after)
    coder_backend = ScriptedBackend(tokenizer, [], chat_replies=list(code_replies))
    graph = build_graph(Requester(requester_backend, config.requester), Coder(coder_backend, config.coder), Sandbox(config.sandbox), config)
    return graph, config, requester_backend, coder_backend


def assert_token_exact(state, tokenizer):
    """Decoding the ids gives the transcript; the mask is 1 on exactly the requester's own tokens."""
    trajectory = state.trajectory
    assert tokenizer.decode(trajectory.token_ids) == trajectory.transcript
    assert len(trajectory.loss_mask) == len(trajectory.token_ids)
    expected = [int(seg.source == "requester") for seg in trajectory.segments for _ in seg.token_ids]
    assert trajectory.loss_mask == expected
    assert sum(trajectory.loss_mask) == trajectory.count("requester")
    for segment in trajectory.segments:
        if segment.source == "inserted":
            assert encode_text(tokenizer, segment.text) == segment.token_ids


def fenced(code):
    return f"```python\n{code}\n```"


async def test_request_code_output_answer(tokenizer):
    graph, config, requester, coder = make_graph(
        tokenizer,
        ["I need a product. <request>multiply 48213 by 9123</request>", "So it is \\boxed{439847199}."],
        [fenced("print(48213 * 9123)")],
    )
    state = await run_question(graph, "What is 48213 * 9123?", config)
    assert state.status == "answered" and state.answer == "439847199"
    [call] = state.calls
    assert (call.request, call.code, call.output.strip(), call.error) == ("multiply 48213 by 9123", "print(48213 * 9123)", "439847199", None)
    assert [s.source for s in state.trajectory.segments] == ["prompt", "requester", "inserted", "requester"]
    assert "439847199" in state.trajectory.segments[2].text
    # the second requester call saw the inserted result as the tail of its prompt
    assert requester.prompts[1] == state.trajectory.segments[0].token_ids + state.trajectory.segments[1].token_ids + state.trajectory.segments[2].token_ids
    assert coder.chats[0][-1]["content"] == "multiply 48213 by 9123"
    assert_token_exact(state, tokenizer)


async def test_failed_program_is_repaired_with_the_error(tokenizer):
    graph, config, _, coder = make_graph(
        tokenizer,
        ["<request>divide 10 by 4</request>", "\\boxed{2.5}"],
        [fenced("print(10 / zero)"), fenced("print(10 / 4)")],
    )
    state = await run_question(graph, "10/4?", config)
    [call] = state.calls
    assert len(call.attempts) == 2 and call.attempts[0].failed and "NameError" in call.attempts[0].error
    assert call.output.strip() == "2.5" and call.error is None
    assert "NameError" in coder.chats[1][-1]["content"]  # the repair turn carries the error
    assert state.status == "answered"
    assert_token_exact(state, tokenizer)


async def test_repairs_are_bounded_and_the_error_reaches_the_requester(tokenizer):
    graph, config, _, coder = make_graph(
        tokenizer,
        ["<request>x</request>", "I cannot. \\boxed{0}"],
        [fenced("raise ValueError('bad')")] * 2,
        coder={"max_repairs": 1},
    )
    state = await run_question(graph, "q", config)
    [call] = state.calls
    assert len(call.attempts) == 2 and len(coder.chats) == 2
    assert "ValueError: bad" in state.trajectory.segments[2].text
    assert_token_exact(state, tokenizer)


async def test_coder_without_code_and_empty_request_are_reported_to_the_requester(tokenizer):
    graph, config, _, _ = make_graph(
        tokenizer,
        ["<request></request>", "<request>add 1 and 2</request>", "\\boxed{3}"],
        ["I am not sure."] * 3,
        coder={"max_repairs": 0},
    )
    state = await run_question(graph, "q", config)
    assert "empty request" in state.calls[0].inserted
    assert "no program" in state.calls[1].inserted
    assert state.status == "answered"


async def test_request_limit_ends_the_run(tokenizer):
    graph, config, _, _ = make_graph(
        tokenizer,
        ["<request>a</request>", "<request>b</request>"],
        [fenced("print(1)")],
        limits={"max_calls": 1},
    )
    state = await run_question(graph, "q", config)
    assert state.status == "limit" and len(state.calls) == 1


async def test_segment_and_total_token_limits(tokenizer):
    long_text = "word " * 200
    graph, config, _, _ = make_graph(tokenizer, [long_text], requester={"max_segment_tokens": 20})
    state = await run_question(graph, "q", config)
    assert state.status == "limit" and state.trajectory.count("requester") == 20

    graph, config, requester, _ = make_graph(
        tokenizer, ["<request>a</request>", long_text], [fenced("print(1)")], limits={"max_total_tokens": 30}
    )
    state = await run_question(graph, "q", config)
    assert state.status == "limit"
    assert state.trajectory.count("requester", "inserted") <= 30


async def test_no_answer_when_the_requester_stops_without_a_box(tokenizer):
    graph, config, _, _ = make_graph(tokenizer, ["I think it is 5."])
    state = await run_question(graph, "q", config)
    assert state.status == "no_answer" and state.answer is None
    assert any("no tool call" in p for p in state.problems)


async def test_backend_failure_ends_with_error_status_not_an_exception(tokenizer):
    graph, config, _, _ = make_graph(tokenizer, ["<request>a</request>"], [fenced("print(1)")], fail_after=1)
    state = await run_question(graph, "q", config)
    assert state.status == "error" and "went away" in state.error
    assert len(state.calls) == 1 and state.calls[0].output.strip() == "1"  # the partial run is kept


async def test_stream_reports_each_step_in_order(tokenizer):
    graph, config, _, _ = make_graph(tokenizer, ["<request>add 2 and 2</request>", "\\boxed{4}"], [fenced("print(2 + 2)")])
    kinds = [event["event"] async for event in stream_question(graph, "q", config)]
    assert kinds == ["request", "code", "output", "result", "answer", "status", "done"]


async def test_batch_runs_questions_concurrently_and_keeps_them_apart(tokenizer):
    questions = [f"What is {n} + {n}?" for n in range(6)]
    config = AgentConfig()

    def graph_for(n):
        return make_graph(tokenizer, [f"<request>add {n} and {n}</request>", f"\\boxed{{{2 * n}}}"], [fenced(f"print({n} + {n})")])[0]

    states = await asyncio.gather(*(run_question(graph_for(n), q, config) for n, q in enumerate(questions)))
    assert [s.answer for s in states] == [str(2 * n) for n in range(6)]
    assert [s.calls[0].output.strip() for s in states] == [str(2 * n) for n in range(6)]


class EchoingBackend(ScriptedBackend):
    """Answers each question with the number at the end of its own prompt, so a swapped result would show."""

    async def generate(self, requests):
        self.replies = [f"\\boxed{{{self.tokenizer.decode(r.prompt_ids).rsplit('question ', 1)[1].split('<')[0]}}}" for r in requests]
        return await super().generate(requests)


async def test_run_batch_shares_one_graph(tokenizer):
    backend = EchoingBackend(tokenizer, [])
    config = AgentConfig()
    graph = build_graph(Requester(backend), Coder(ScriptedBackend(tokenizer, [])), Sandbox(), config)
    states = await run_batch(graph, [f"question {n}" for n in range(6)], config, concurrency=3)
    assert [s.question for s in states] == [f"question {n}" for n in range(6)]
    assert [s.answer for s in states] == [str(n) for n in range(6)]
    assert all(s.status == "answered" for s in states)


async def test_a_failing_coder_ends_the_question_with_its_own_error(tokenizer):
    from agents.errors import DuetError

    graph, config, _, _ = make_graph(tokenizer, ["<request>add 1 and 2</request>"], [DuetError("coder server answered 500: overloaded")])
    state = await run_question(graph, "q", config)
    assert state.status == "error" and "answered 500: overloaded" in state.error and "IndexError" not in state.error
    assert state.calls[0].attempts == [] and [s.source for s in state.trajectory.segments] == ["prompt", "requester"]


class CountingSandbox(Sandbox):
    def __init__(self):
        super().__init__()
        self.programs = []

    async def arun(self, code):
        self.programs.append(code)
        return await super().arun(code)


async def test_a_coder_failing_during_a_repair_does_not_rerun_the_failed_program(tokenizer):
    config = AgentConfig()
    coder = ScriptedBackend(tokenizer, [], chat_replies=[fenced("print(1 / 0)"), ConnectionError("coder went away")])
    sandbox = CountingSandbox()
    graph = build_graph(Requester(ScriptedBackend(tokenizer, ["<request>divide 1 by 0</request>"])), Coder(coder), sandbox, config)
    state = await run_question(graph, "q", config)
    assert sandbox.programs == ["print(1 / 0)"]
    assert state.status == "error" and "coder went away" in state.error
    [call] = state.calls
    assert len(call.attempts) == 1 and call.inserted is None


async def test_a_reply_without_code_goes_back_to_the_coder_as_written(tokenizer):
    from prompts import load_text

    graph, config, _, coder = make_graph(
        tokenizer, ["<request>add 1 and 2</request>", "\\boxed{3}"], ["I am not sure.", fenced("print(1 + 2)")]
    )
    state = await run_question(graph, "q", config)
    assert state.status == "answered" and state.calls[0].output.strip() == "3"
    repair = coder.chats[1]
    assert repair[-2] == {"role": "assistant", "content": "I am not sure."}
    assert repair[-1] == {"role": "user", "content": load_text("coder_no_code")}


async def test_sampled_runs_depend_on_their_seed_not_on_what_runs_beside_them(tiny_backend):
    config = AgentConfig.model_validate({"requester": {"temperature": 1.0, "max_segment_tokens": 12}, "limits": {"max_calls": 0}})
    graph = build_graph(Requester(tiny_backend, config.requester), Coder(tiny_backend, config.coder), Sandbox(), config)
    questions = ["What is 2 + 2?", "Name a prime.", "What is 2 + 2?", "Count to three."]
    together = await run_batch(graph, questions, config, seeds=[11, 12, 13, 14])
    alone = [await run_question(graph, q, config, seed=seed) for q, seed in zip(questions, [11, 12, 13, 14])]
    reversed_order = (await run_batch(graph, questions[::-1], config, seeds=[14, 13, 12, 11]))[::-1]
    ids = [[s.trajectory.token_ids for s in run] for run in (together, alone, reversed_order)]
    assert ids[0] == ids[1] == ids[2]
    assert together[0].trajectory.token_ids != together[2].trajectory.token_ids  # same question, another seed


async def test_reasoning_streams_through_the_graph_from_a_real_backend(tiny_backend, tokenizer):
    """Streamed text arrives as the node's custom events and adds up to what the requester wrote."""
    config = AgentConfig.model_validate({"requester": {"max_segment_tokens": 24}, "limits": {"max_calls": 0}})
    graph = build_graph(Requester(tiny_backend, config.requester), Coder(tiny_backend, config.coder), Sandbox(), config)
    streamed, state = "", None
    async for event in stream_question(graph, "Say something.", config):
        if event["event"] == "reasoning":
            streamed += event["text"]
        elif event["event"] == "done":
            state = event["state"]
    assert streamed == "".join(tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in state.trajectory.segments if s.source == "requester")
    assert_token_exact(state, tokenizer)


async def test_a_chat_thread_sees_earlier_exchanges_once(tokenizer):
    """The second question's prompt holds the first exchange as a user and an assistant turn, with one end-of-turn."""
    from langgraph.checkpoint.memory import InMemorySaver

    config = AgentConfig()
    requester = ScriptedBackend(tokenizer, ["First answer \\boxed{1}", "Second \\boxed{2}"])
    graph = build_graph(Requester(requester), Coder(ScriptedBackend(tokenizer, [])), Sandbox(), config, InMemorySaver())
    await run_question(graph, "first question", config, thread_id="t")
    state = await run_question(graph, "second question", config, thread_id="t")
    prompt = tokenizer.decode(requester.prompts[1])
    assert [e.question for e in state.history] == ["first question", "second question"]
    assert "first question<|im_end|>\n<|im_start|>assistant\nFirst answer \\boxed{1}<|im_end|>\n<|im_start|>user\nsecond question" in prompt
    assert state.trajectory.segments[0].token_ids == requester.prompts[1]


async def test_requester_alone_gets_a_notice_instead_of_a_program(tokenizer):
    config = AgentConfig()
    requester = ScriptedBackend(tokenizer, ["<request>multiply 3 by 4</request>", "I will do it myself: \\boxed{12}"])
    graph = build_graph(Requester(requester), None, Sandbox(), config)
    state = await run_question(graph, "3 * 4?", config)
    [call] = state.calls
    assert len(call.attempts) == 1 and call.code is None and "no helper" in call.inserted
    assert state.status == "answered" and state.answer == "12"
    assert_token_exact(state, tokenizer)


async def test_a_long_chat_leaves_out_its_oldest_exchanges_to_fit_the_context(tokenizer):
    from langgraph.checkpoint.memory import InMemorySaver

    config = AgentConfig.model_validate({"limits": {"max_total_tokens": 60}})
    answer = "It is " + "very " * 40 + "\\boxed{1}"
    requester = ScriptedBackend(tokenizer, [answer] * 6)
    requester.context_window = 520
    graph = build_graph(Requester(requester), Coder(ScriptedBackend(tokenizer, [])), Sandbox(), config, InMemorySaver())
    states = [await run_question(graph, f"question number {n}", config, thread_id="long") for n in range(6)]
    assert all(len(prompt) + 60 <= 520 for prompt in requester.prompts)
    assert all(s.status == "answered" for s in states)
    assert not any("left out" in p for p in states[0].problems)
    dropped = [p for p in states[-1].problems if "left out" in p]
    assert dropped, "the last question's prompt should have needed room"
    last_prompt = tokenizer.decode(requester.prompts[-1])
    assert "question number 4" in last_prompt and "question number 0" not in last_prompt  # the newest exchanges stay


async def test_two_boxes_are_a_format_violation_and_the_last_is_judged(tokenizer):
    from agents.protocol import SEVERAL_ANSWERS
    from training.rewards import format_reward

    graph, config, _, _ = make_graph(tokenizer, ["Maybe \\boxed{4}, no: \\boxed{5}"])
    state = await run_question(graph, "q", config)
    assert state.status == "answered" and state.answer == "5"
    assert SEVERAL_ANSWERS in state.problems and format_reward({}, state) == 0.0

    graph, config, _, _ = make_graph(tokenizer, ["It is \\boxed{4}. Let me check. <request>add 2 and 2</request>", "Yes, \\boxed{4}"], [fenced("print(4)")])
    state = await run_question(graph, "q", config)
    assert state.answer == "4" and SEVERAL_ANSWERS in state.problems and format_reward({}, state) == 0.0

    graph, config, _, _ = make_graph(tokenizer, ["<request>add 2 and 2</request>", "So \\boxed{4}"], [fenced("print(4)")])
    state = await run_question(graph, "q", config)
    assert format_reward({}, state) == 1.0  # one box across the whole trajectory is well formed

    graph, config, _, _ = make_graph(tokenizer, ["<request>print \\boxed{4} for 2 + 2</request>", "So \\boxed{4}"], [fenced("print(4)")])
    state = await run_question(graph, "q", config)
    assert format_reward({}, state) == 1.0  # a box inside a request is not an answer


async def test_a_segment_cut_off_by_its_token_limit_is_limit_even_with_a_box_in_it(tokenizer):
    from training.rewards import format_reward

    graph, config, _, _ = make_graph(tokenizer, ["So \\boxed{5} and then " + "word " * 100], requester={"max_segment_tokens": 20})
    state = await run_question(graph, "q", config)
    assert state.status == "limit" and state.answer is None and format_reward({}, state) == 0.0
    assert any("ran out of tokens" in problem for problem in state.problems)
