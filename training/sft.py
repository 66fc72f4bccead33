"""Cold start: supervised fine-tuning on protocol traces, so that GRPO starts from a requester that asks.

Traces come from the graph itself (rejection sampling: runs of the requester, or of a teacher, that got the answer
right and made a request), or from a JSONL file. The loss is cross-entropy on the requester's own tokens only, with
the same loss mask as GRPO: the prompt and the inserted results are never trained on. Each trace keeps the token ids
it was generated with; only the prompt is rebuilt, from the settings the model is being trained for (e.g. without
the few-shot examples, which shortens every later trajectory). Ids are only ids under the tokenizer that wrote them:
a trace written by another tokenizer (a teacher's, another model's file) is tokenized again from its text, segment
by segment, so the loss mask stays exact.

With `role: coder` the model trained is the coder instead: on {"request", "program"} pairs (`duet data coder-pairs`),
each as the coder's own prompt for the request followed by the program it should reply with, the reply alone trained on.

Trace file rows: {"question", "segments": [{"source": "requester" | "inserted", "text", "token_ids"?}], "tokenizer"?},
as written by `traces.save_to` (`tokenizer`, from agents.tokenizing.tokenizer_fingerprint, names the tokenizer of the
ids; each segment's text is what it reads as, without control tokens such as the end of turn); or simply
{"question", "response"}, where <result>...</result> blocks are the inserted parts.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import torch

from agents.coder import Coder, CoderSettings, fenced
from agents.errors import DuetError
from agents.protocol import RESULT_CLOSE, RESULT_OPEN, extract_code
from agents.requester import Requester
from agents.tokenizing import encode_chat, encode_text, tokenizer_fingerprint
from agents.tools.toolbox import Toolbox
from graph.build import Team, as_trained, build_graph
from graph.config import AgentConfig
from graph.run import run_batch
from graph.seeds import derive_seed
from graph.state import AgentState, Segment, Trajectory
from training.batch import TrajectoryBatch, policy_logprobs
from training.checkpoint import save_checkpoint
from training.accelerate_setup import make_accelerator
from training.answers import Verdict
from training.config import SFTRunConfig, TraceSettings
from training.data import load_rows, write_jsonl
from training.policy import Policy
from training.progress import Progress
from training.rewards import acheck_answer, format_reward

RESULT_BLOCK = re.compile(rf"\n?{re.escape(RESULT_OPEN)}.*?{re.escape(RESULT_CLOSE)}\n?", re.DOTALL)


def run_sft(config: SFTRunConfig) -> Path:
    from rich.console import Console
    from transformers import get_scheduler

    args = config.sft
    accelerator = make_accelerator(args, config.agent.backends.device)
    console = Console(stderr=True, soft_wrap=True)
    policy = Policy(config.model, device=accelerator.device, role=config.role)
    # the settings the model is trained for, once: its checkpoint's (prompt, mode, limits) where the recipe sets none;
    # traces are sampled under them and the new checkpoint remembers them
    agent = as_trained(config.agent, policy.spec) if config.role == "requester" else config.agent
    if config.role == "coder":
        pairs = read_pairs(config.traces.file, agent.coder, policy.tokenizer)
        coder = Coder(None, agent.coder)
        examples = [coder_example(pair, coder, policy.tokenizer) for pair in pairs]
        remembered = {}  # the requester's settings are no coder's to remember
        if accelerator.is_main_process:
            console.print(f"training the coder on {len(examples)} request -> program pairs", highlight=False)
    else:
        examples = requester_examples(config, policy, agent, accelerator, console)
        remembered = agent.remembered()
    loader = torch.utils.data.DataLoader(
        examples, batch_size=args.per_device_train_batch_size, shuffle=True,
        collate_fn=lambda trajectories: TrajectoryBatch.from_trajectories(trajectories, policy.pad_id, with_logprobs=False),
    )

    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, loader = accelerator.prepare(policy.model, optimizer, loader)
    total_steps = args.num_train_epochs * -(-len(loader) // args.gradient_accumulation_steps)
    # not through accelerator.prepare, whose wrapper steps the schedule num_processes times per optimizer step
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=total_steps)

    # ---- training: cross-entropy on the trained model's own tokens (the requester's, or the coder's reply)
    metrics_path = Path(args.output_dir) / "metrics.jsonl"
    if accelerator.is_main_process:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)
        accelerator.init_trackers(Path(args.output_dir).name)
    # a bar on a terminal; elsewhere (a log file) a line every logging_steps steps
    progress = Progress("SFT", total_steps, unit="step", console=console, every=args.logging_steps, seconds=None, enabled=accelerator.is_main_process)
    step, losses = 0, []
    with progress:
        for epoch in range(args.num_train_epochs):
            model.train()
            for batch in loader:
                with accelerator.accumulate(model):
                    logprobs, _ = policy_logprobs(model, batch, temperature=1.0)
                    loss = -(logprobs * batch.mask).sum() / batch.mask.sum().clamp(min=1)
                    accelerator.backward(loss)
                    losses.append(float(loss.detach()))
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
                if accelerator.sync_gradients:
                    scheduler.step()  # once per optimizer step (the prepared optimizer steps only when gradients sync)
                    step += 1
                    row = {"step": step, "epoch": epoch + 1, "loss": sum(losses) / len(losses), "learning_rate": scheduler.get_last_lr()[0]}
                    losses = []
                    if accelerator.is_main_process:
                        with metrics_path.open("a") as sink:
                            sink.write(json.dumps(row) + "\n")
                    if step % args.logging_steps == 0:
                        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
                    progress.update(completed=step, live=f"loss {row['loss']:.3f}  epoch {epoch + 1}")
                    if step % args.save_steps == 0 and step < total_steps:
                        save_checkpoint(accelerator, Path(args.output_dir), step, model, policy.tokenizer,
                                        policy.checkpoint_info(remembered), {"step": step}, optimizer, scheduler, args.save_total_limit)
    save_checkpoint(accelerator, Path(args.output_dir), step, model, policy.tokenizer,
                    policy.checkpoint_info(remembered), {"step": step}, optimizer, scheduler, args.save_total_limit)
    accelerator.end_training()
    return Path(args.output_dir) / "checkpoint-latest"


def requester_examples(config: SFTRunConfig, policy: Policy, agent: AgentConfig, accelerator, console) -> list[Trajectory]:
    """The requester's trajectories: the traces (sampled through the graph, or read) and the demonstrations."""
    from accelerate.utils import gather_object

    # ---- traces: sampled through the graph (each process its share of the questions), or read from a file; the
    # demonstrations are read first, so a broken file stops the run before the sampling
    demonstrations = [] if config.traces.demonstrations is None else read_traces(config.traces.demonstrations)
    if config.traces.file is not None:
        traces = read_traces(config.traces.file)
    else:
        rows = [row for path in config.data.train for row in path.load().rows]
        mine = rows[accelerator.process_index :: accelerator.num_processes]
        traces = [t for part in gather_object([collect_traces(config, policy, mine, agent, show=accelerator.is_main_process)]) for t in part]
        if config.traces.save_to is not None and accelerator.is_main_process:
            write_jsonl(traces, config.traces.save_to)
    traces += demonstrations
    if not traces:
        raise DuetError("no traces to train on: no sampled run was right (and asked, with traces.require_request); "
                        "sample more (traces.samples_per_question, temperatures), use a teacher, or give traces.file or traces.demonstrations")
    if accelerator.is_main_process:
        console.print(f"training on {len(traces)} traces of {len({t['question'] for t in traces})} questions", highlight=False)

    # ---- the examples: the prompt the model is trained for, then each trace's own ids (its text, tokenized again,
    # when another tokenizer wrote them)
    prompter = Requester(policy_backend(policy, config), agent.requester, Toolbox(agent.tools).cards())
    student = tokenizer_fingerprint(policy.tokenizer)
    foreign = sum(ids_are_ours(trace, policy.tokenizer, student) is False for trace in traces)
    if foreign and accelerator.is_main_process:
        console.print(f"tokenizing {foreign} traces again from their text: another tokenizer wrote their ids", highlight=False)
    return [to_trajectory(trace, prompter, policy.tokenizer, student) for trace in traces]


def read_pairs(path: Path, settings: CoderSettings, tokenizer) -> list[dict]:
    """A coder's training pairs: JSONL rows {"request", "program"}, and the "question" they came from where the coder is
    shown it (coder.show_question), as `duet data coder-pairs` writes them. Each must read back as the coder would
    see and write it: the request as the protocol strips it, the program as extract_code takes it from the fenced
    reply, the reply within coder.max_new_tokens."""
    pairs = []
    for number, row in json_lines(path, "coder pairs"):
        where = f"{path} line {number}"
        if not all(isinstance(row.get(key), str) and row[key].strip() for key in ("request", "program")):
            raise DuetError(f"{where}: a coder pair needs a request and a program, both text; write them with duet data coder-pairs")
        if settings.show_question and not isinstance(row.get("question"), str):
            raise DuetError(f"{where}: agent.coder.show_question shows the coder the question, and this pair has none; add it, or turn show_question off")
        if extract_code(fenced(row["program"])) != row["program"]:
            raise DuetError(f"{where}: the program does not survive its fence (it holds ``` or starts or ends with blank lines); write it plainly")
        replied = len(encode_text(tokenizer, fenced(row["program"]))) + 1
        if replied > settings.max_new_tokens:
            raise DuetError(f"{where}: the program's reply is {replied} tokens, more than agent.coder.max_new_tokens "
                            f"({settings.max_new_tokens}) lets the coder write; shorten it or raise the limit")
        pairs.append({**row, "request": row["request"].strip()})
    if not pairs:
        raise DuetError(f"{path} holds no coder pairs; write them with duet data coder-pairs")
    return pairs


def coder_example(pair: dict, coder: Coder, tokenizer) -> Trajectory:
    """The coder's prompt for the request, exactly as `Coder.write` sends it, then the program as the coder replies
    (fenced, as its examples show), ending with the end of turn that stops it; only the reply is trained on."""
    prompt = encode_chat(tokenizer, coder.messages(pair["request"], pair.get("question"), []))
    reply = [*encode_text(tokenizer, fenced(pair["program"])), tokenizer.eos_token_id]
    # "requester" marks the model's own, trained-on tokens (graph.state.Trajectory.loss_mask), here the coder's
    return Trajectory(segments=[Segment(source="prompt", token_ids=prompt, text=tokenizer.decode(prompt)),
                                Segment(source="requester", token_ids=reply, text=tokenizer.decode(reply))])


def collect_traces(config: SFTRunConfig, policy: Policy, rows: list[dict], agent: AgentConfig, show: bool = True) -> list[dict]:
    """Rejection sampling through the graph: k runs per question at each temperature; keep the right ones (that
    asked, if required), without duplicates, at most max_per_question per question. A teacher samples under the
    settings its student is trained for (`agent`: mode, limits), with traces.few_shot; never under its own. With
    `show`, the runs are counted as they finish (a bar, or a line now and then in a log)."""
    settings = config.traces
    requester_settings = agent.requester.filled()
    progress = Progress("traces", len(rows) * settings.samples_per_question * len(settings.temperatures), unit="run", enabled=show)
    asked = 0

    def finished(state: AgentState) -> None:
        nonlocal asked
        asked += bool(state.calls)
        progress.update(advance=1, live=f"asked in {asked}")

    async def sample() -> list[dict]:
        own = None if settings.teacher else policy_backend(policy, config)
        team = Team(settings.teacher or policy.spec, config.model.coder, agent, requester_backend=own, load_coder=requester_settings.mode == "request")
        sampled = []
        try:
            progress.start()
            for temperature in settings.temperatures:
                sampling = {"temperature": temperature, "few_shot": settings.few_shot}
                requester = Requester(team.requester.backend, requester_settings.model_copy(update=sampling))
                graph = build_graph(requester, team.coder, team.sandbox, agent, toolbox=team.toolbox)
                runs = [row for row in rows for _ in range(settings.samples_per_question)]
                seeds = [derive_seed(config.sft.seed, temperature, row["id"], k) for row in rows for k in range(settings.samples_per_question)]
                states = await run_batch(graph, [row["question"] for row in runs], agent, seeds=seeds, on_finished=finished)
                verdicts = await asyncio.gather(*(acheck_answer(row, state.answer) for row, state in zip(runs, states)))
                sampled += zip(runs, states, verdicts)
        finally:
            progress.close()
            await team.aclose()
            if own is not None:
                await own.aclose()
        return keep_traces(sampled, settings, team.requester.backend.tokenizer)

    return asyncio.run(sample())


def keep_traces(sampled: list[tuple[dict, AgentState, Verdict]], settings: TraceSettings, tokenizer=None) -> list[dict]:
    """The rejection rule: a run is kept when its answer is right, its format reward is 1 (a right answer after an
    unclosed tag or followed by more text would teach the format away) and (with require_request) it asked at least
    once; identical runs once; at most max_per_question per question, in the order sampled. `tokenizer` is the
    one that wrote the runs' ids (see as_trace)."""
    kept: dict[str, list[dict]] = {}
    fingerprint = None if tokenizer is None else tokenizer_fingerprint(tokenizer)
    for row, state, verdict in sampled:
        if verdict.correct and format_reward(row, state) == 1.0 and (state.calls or not settings.require_request):
            trace = as_trace(row, state, tokenizer, fingerprint)
            same = kept.setdefault(row["id"], [])
            if len(same) < settings.max_per_question and trace["segments"] not in [t["segments"] for t in same]:
                same.append(trace)
    return [trace for traces in kept.values() for trace in traces]


def policy_backend(policy: Policy, config: SFTRunConfig):
    from agents.backends.transformers_local import TransformersBackend

    return TransformersBackend(policy.model, policy.tokenizer, name=policy.spec, max_batch_size=config.agent.backends.max_batch_size, seed=config.sft.seed)


def as_trace(row: dict, state: AgentState, tokenizer=None, fingerprint: dict | None = None) -> dict:
    """A run as a trace: its segments after the prompt, with the ids as sampled and, given the `tokenizer` that wrote
    them, its fingerprint (which says whose ids they are) and each requester segment's text without control tokens
    (the end of turn), so that another tokenizer can tokenize the text again as a live run would have written it."""
    def text_of(segment: Segment) -> str:
        readable = tokenizer is not None and segment.source == "requester"
        return tokenizer.decode(segment.token_ids, skip_special_tokens=True) if readable else segment.text

    segments = [{"source": s.source, "text": text_of(s), "token_ids": s.token_ids} for s in state.trajectory.segments if s.source != "prompt"]
    trace = {"id": row["id"], "question": row["question"], "answer": row["answer"], "segments": segments}
    if tokenizer is not None:
        trace["tokenizer"] = fingerprint or tokenizer_fingerprint(tokenizer)
    return trace


def read_traces(path: Path) -> list[dict]:
    traces = []
    for number, trace in json_lines(path, "traces"):
        if "question" not in trace or not ("segments" in trace or "response" in trace):
            hint = "; this is a coder's pair (request, program): train it with role: coder" if {"request", "program"} <= trace.keys() else ""
            raise DuetError(f"{path} line {number}: a trace needs a question and segments (or a response){hint}")
        traces.append(trace)
    return traces


def json_lines(path: Path, what: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file of `what`."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DuetError(f"cannot read {what} {path}: {error.strerror}; give a JSONL file") from error
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DuetError(f"{path} line {number} is not JSON; each line is one of the {what}") from error
        if not isinstance(row, dict):
            raise DuetError(f"{path} line {number} is not a JSON object; each line is one of the {what}")
        rows.append((number, row))
    return rows


def to_trajectory(trace: dict, prompter: Requester, tokenizer, fingerprint: dict | None = None) -> Trajectory:
    """The prompt for the settings being trained, then the trace's segments: their own ids when they are this
    tokenizer's (`ids_are_ours`; `fingerprint` is the tokenizer's, computed once by the caller), else their text
    tokenized once, piece by piece (so the mask stays exact), ending with the end-of-turn token a live run would have
    written."""
    prompt, _ = prompter.prompt_ids(trace["question"])
    segments = [Segment(source="prompt", token_ids=prompt, text=tokenizer.decode(prompt))]
    pieces = trace.get("segments") or split_response(trace["response"])
    ours = ids_are_ours(trace, tokenizer, fingerprint) is not False
    for index, piece in enumerate(pieces):
        ids = piece.get("token_ids") if ours else None
        if ids is None:
            if not isinstance(piece.get("text"), str):
                raise DuetError(f"a segment of the trace of {trace['question'][:60]!r} has no text to tokenize; give each segment its text")
            ids = encode_text(tokenizer, piece["text"])
            if index == len(pieces) - 1 and piece["source"] == "requester":
                ids = [*ids, tokenizer.eos_token_id]
        segments.append(Segment(source=piece["source"], token_ids=ids, text=tokenizer.decode(ids)))
    return Trajectory(segments=segments)


def ids_are_ours(trace: dict, tokenizer, fingerprint: dict | None = None) -> bool | None:
    """Whether the trace's token ids are `tokenizer`'s (None when it has no ids). A trace that names its tokenizer is
    answered by the vocabulary hash. One written before duet named them is the tokenizer's when every segment's ids
    are in its range and decode to the segment's text; otherwise it is refused, not tokenized again: its text still
    holds the writer's control tokens as strings (its end of turn), and nothing says which they are."""
    pieces = [piece for piece in trace.get("segments") or () if piece.get("token_ids") is not None]
    if not pieces:
        return None
    writer = trace.get("tokenizer")
    if isinstance(writer, dict):
        return writer.get("vocabulary") == (fingerprint or tokenizer_fingerprint(tokenizer))["vocabulary"]
    size = len(tokenizer)
    for piece in pieces:
        ids = piece["token_ids"]
        fits = isinstance(ids, list) and all(isinstance(i, int) and 0 <= i < size for i in ids)
        if not fits or piece.get("text") not in (tokenizer.decode(ids), tokenizer.decode(ids, skip_special_tokens=True)):
            raise DuetError(
                f"the trace of {trace['question'][:60]!r} has token ids that are not this model's tokenizer's (they do not decode to "
                "their text) and does not say which tokenizer wrote them; sample the traces again (traces.save_to now records it) "
                "or remove their token_ids to train on their text"
            )
    return True


def split_response(response: str) -> list[dict]:
    """Text outside <result> blocks is the requester's; the blocks, with their surrounding newlines, are inserted."""
    pieces, cursor = [], 0
    for block in RESULT_BLOCK.finditer(response):
        if block.start() > cursor:
            pieces.append({"source": "requester", "text": response[cursor : block.start()]})
        pieces.append({"source": "inserted", "text": block.group(0)})
        cursor = block.end()
    if cursor < len(response):
        pieces.append({"source": "requester", "text": response[cursor:]})
    return pieces
