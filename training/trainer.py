"""GRPO training of the requester, through the same graph `duet ask` runs. Read it top to bottom:

    for each step:
        questions   the step's share of the data stream (a pure function of the step: resumable)
        rollouts    G trajectories per question through the compiled graph, sampled by the policy itself
        rewards     named components (answer, format, plugged-in ones), weighted by the step's schedule
        advantages  normalised within each group; groups whose rewards are all equal are dropped
        update      num_iterations optimizer steps on the kept trajectories, in gradient-accumulated micro-batches
        log, save   metrics.jsonl, trackers, curves, checkpoint-N

Distribution, mixed precision and gradient accumulation come from accelerate: under `accelerate launch` every
process rolls out its own questions with its own copy of the policy, and DDP keeps the copies identical.
Rollouts live in rollout.py, the math in grpo.py, tensors in batch.py, checkpoints in checkpoint.py, logging in run_log.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import torch

from agents.backends.transformers_local import TransformersBackend
from agents.errors import DuetError
from graph.build import Team
from graph.state import AgentState
from training.accelerate_setup import make_accelerator
from training.batch import TrajectoryBatch, policy_logprobs
from training.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from training.config import GRPORunConfig
from training.data import TrainingStream, load_rows
from training.difficulty import load_pass_rates
from training.evaluate import record_of, summarize
from training.grpo import equal_reward_groups, group_advantages, grpo_loss, sampler_correction
from training.policy import Policy, weights_checksum
from training.rewards import RewardScorer
from training.rollout import rollout_groups
from training.run_log import RunLog

ERROR_SHARE_TO_STOP = 0.5


def train(config: GRPORunConfig, resume: bool = False, on_start=None) -> Path:
    from accelerate.utils import gather_object
    from transformers import get_scheduler

    args = config.grpo
    accelerator = make_accelerator(args, config.agent.backends.device)
    rank, world = accelerator.process_index, accelerator.num_processes

    # ---- data: every process takes its own questions from one deterministic stream
    rows, skipped = [], 0
    for path in config.data.train:
        loaded = path.load()
        rows += loaded.rows
        skipped += loaded.skipped
    pass_rates = {k: v for path in config.data.train for k, v in (load_pass_rates(path.path) or {}).items()}
    stream = TrainingStream(rows, config.data.order, args.seed, pass_rates)
    questions_per_step = args.questions_per_step

    # ---- the policy (trained), the reference (only if beta > 0), optimizer and schedule
    policy = Policy(config.model, device=accelerator.device)
    reference = policy.reference(args.beta)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    optimizer_steps = args.max_steps * args.num_iterations
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=optimizer_steps)
    # the schedule stays out of accelerator.prepare, as in transformers' Trainer: accelerate's wrapper would step it
    # num_processes times per optimizer step; optimize() steps it once per optimizer step, on every process alike
    model, optimizer = accelerator.prepare(policy.model, optimizer)

    # ---- the agent: the same graph as `duet ask`, with the policy as requester and a frozen coder
    agent = config.agent.model_copy(deep=True)
    agent.requester.temperature, agent.requester.top_p = args.temperature, args.top_p
    agent.backends.device = str(accelerator.device)  # a local coder sits beside this process's policy
    backend = rollout_backend(policy, accelerator.unwrap_model(model), agent, args.seed + rank, args.vllm_enable_sleep_mode)
    adapter_folder = args.output_dir / f"rollout-adapter-rank{rank}"
    sleeping = policy.rollout_engine == "vllm" and args.vllm_enable_sleep_mode
    team = Team(policy.spec, config.model.coder, agent, requester_backend=backend)
    agent = team.config  # what the policy's checkpoint remembers (prompt, mode, limits), unless the recipe sets it
    config = config.model_copy(update={"agent": agent})
    graph = team.graph()
    scorer = RewardScorer(config.rewards)
    remembered = agent.remembered()  # the checkpoints' duet.json: the settings this run trains under
    record_mode = "inline" if team.requester.mode == "inline" else "coder"  # as `duet eval` names the modes

    start = 0
    if resume:
        checkpoint = latest_checkpoint(args.output_dir)
        if checkpoint is None:
            raise DuetError(f"nothing to resume in {args.output_dir}: it has no complete checkpoint; start without --resume")
        policy.load_weights(checkpoint)
        start = load_trainer_state(checkpoint, accelerator, optimizer, scheduler)["step"]
        if policy.rollout_engine == "vllm":
            policy.push_to(backend, accelerator.unwrap_model(model), adapter_folder)
    log = RunLog(accelerator, args, config, start, skipped)
    if on_start:
        on_start(accelerator, start)

    loop = asyncio.new_event_loop()
    try:
        for step in range(start, args.max_steps):
            timings, step_began = {}, time.perf_counter()

            # ---- questions and rollouts
            first = (step * world + rank) * questions_per_step
            step_rows = stream.take(first, questions_per_step)
            began = time.perf_counter()
            model.eval()
            group, states = loop.run_until_complete(rollout_groups(graph, agent, step_rows, args.num_generations, args.seed, step))
            timings["rollout"] = time.perf_counter() - began
            if sleeping:
                backend.sleep(keep_weights=policy.lora is not None)

            # ---- rewards and advantages
            verdicts, components = loop.run_until_complete(scorer.components(group, states))
            weights = scorer.weights(step + 1)  # the step number the logs show
            rewards = torch.tensor([scorer.total(c, weights) for c in components], dtype=torch.float32)
            failed = torch.tensor([s.status == "error" for s in states])
            stop_if_backends_fail(accelerator, states, failed)
            batch_std = accelerator.gather(rewards.to(accelerator.device)).std() if args.scale_rewards == "batch" else None
            advantages = group_advantages(rewards, args.num_generations, args.scale_rewards, batch_std.cpu() if batch_std is not None else None)
            dropped = equal_reward_groups(rewards, args.num_generations) if args.drop_equal_reward_groups else torch.zeros(len(step_rows), dtype=torch.bool)
            dropped |= failed.view(-1, args.num_generations).any(dim=1)  # a backend failure is not the policy's doing
            kept = [i for i in range(len(group)) if not dropped[i // args.num_generations]]

            # ---- the update
            began = time.perf_counter()
            batch = TrajectoryBatch.from_trajectories([s.trajectory for s in states], policy.pad_id).to(accelerator.device)
            micro_batches = split_evenly(kept, args.gradient_accumulation_steps)
            ref_logprobs = reference_logprobs(accelerator, reference, batch, micro_batches, args.temperature) if reference is not None else None
            timings["reference"] = time.perf_counter() - began
            began = time.perf_counter()
            update = optimize(accelerator, model, optimizer, scheduler, batch, ref_logprobs, advantages.to(accelerator.device), kept, config,
                              correct_sampler=policy.rollout_engine == "vllm")
            timings["update"] = time.perf_counter() - began
            if policy.rollout_engine == "vllm":
                began = time.perf_counter()
                if sleeping:
                    backend.wake_up()
                policy.push_to(backend, accelerator.unwrap_model(model), adapter_folder)
                timings["weight_sync"] = time.perf_counter() - began

            # ---- log and save
            timings["step"] = time.perf_counter() - step_began
            outcome = {
                "records": [record_of("train", row, record_mode, state, 0.0, verdict) for row, state, verdict in zip(group, states, verdicts)],
                "components": components, "rewards": rewards.tolist(), "dropped": int(dropped.sum()), "groups": len(step_rows),
                "lengths": [state.trajectory.count("requester") for state in states], "checksum": weights_checksum(model),
            }
            log.step(step + 1, gather_object([outcome]), weights, update, timings, optimizer)
            log.rollouts(step + 1, rank, group, states, components, rewards.tolist(), args.num_generations)
            if (step + 1) % args.save_steps == 0 or step + 1 == args.max_steps:
                save(accelerator, args, step + 1, model, policy, remembered, optimizer, scheduler, log)
    finally:
        loop.run_until_complete(team.aclose())
        loop.run_until_complete(backend.aclose())
        loop.close()
        log.close()
    return args.output_dir / "checkpoint-latest"


def optimize(
    accelerator, model, optimizer, scheduler, batch: TrajectoryBatch, ref_logprobs, advantages, kept: list[int], config: GRPORunConfig,
    correct_sampler: bool = False,
) -> dict:
    """num_iterations optimizer steps over the kept trajectories, each in exactly gradient_accumulation_steps
    micro-batches on every process (DDP needs every process to take part in every backward pass: a process with too
    few kept trajectories runs a zero-weighted stand-in).

    The old policy is the one that sampled the rollouts. When the trainer's own weights sampled them (the default
    backend), the log-probabilities the backend recorded are the old policy's. When another engine sampled them
    (`correct_sampler`: vLLM), the old policy is the trainer's view of the same weights, read off the first pass
    before any update, and each trajectory is reweighted by sampler_correction for the engines' difference."""
    args = config.grpo
    everyone_kept = int(accelerator.reduce(torch.tensor(len(kept), device=accelerator.device), reduction="sum"))
    if everyone_kept == 0:
        return {"skipped": 1.0, "reason": "every group was dropped"}
    tokens_everywhere = accelerator.reduce(batch.mask[kept].sum() if kept else torch.zeros((), device=accelerator.device), reduction="sum")
    chunks = split_evenly(kept, args.gradient_accumulation_steps)
    totals: dict[str, list[float]] = {}
    skipped_steps = 0
    trainer_old: dict[int, torch.Tensor] = {}
    for iteration in range(args.num_iterations):
        model.train()
        for index, chunk in enumerate(chunks):
            rows, weight = (chunk, 1.0) if chunk else ([0], 0.0)
            micro = batch.rows(rows)
            with accelerator.accumulate(model):
                logprobs, entropy = policy_logprobs(model, micro, args.temperature)
                old, importance = micro.old_logprobs, None
                if correct_sampler:
                    old = trainer_old.setdefault(index, logprobs.detach())
                    if args.vllm_importance_sampling_correction:
                        importance = sampler_correction(
                            old, micro.old_logprobs, micro.mask, args.vllm_importance_sampling_mode,
                            args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max,
                        )
                loss, stats = grpo_loss(
                    logprobs, old, advantages[rows], micro.mask,
                    loss_type=args.loss_type, epsilon_low=args.epsilon, epsilon_high=args.epsilon_high or args.epsilon,
                    beta=args.beta, ref_logprobs=ref_logprobs[rows] if ref_logprobs is not None else None,
                    use_bias_correction_kl=args.use_bias_correction_kl,
                    num_items_in_batch=float(tokens_everywhere.clamp(min=1)) / accelerator.num_processes,
                    max_completion_length=config.agent.limits.max_total_tokens,
                    gradient_accumulation_steps=args.gradient_accumulation_steps,
                    importance_weights=importance,
                )
                # grpo_loss already normalises for accumulation, as TRL does; accelerate divides by it again
                accelerator.backward(loss * weight * args.gradient_accumulation_steps)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    if torch.isfinite(grad_norm):
                        optimizer.step()
                    else:
                        skipped_steps += 1
                    scheduler.step()
                    optimizer.zero_grad()
                    totals.setdefault("grad_norm", []).append(float(grad_norm))
            if weight:
                mask = micro.mask
                stats["loss"] = loss.detach()
                stats["entropy"] = (entropy * mask).sum() / mask.sum().clamp(min=1)
                if iteration == 0:  # before any update: the trainer's view of the very weights that sampled
                    gap = (logprobs.detach() - micro.old_logprobs).abs() * mask
                    stats["logprob_mismatch/mean"] = gap.sum() / mask.sum().clamp(min=1)
                    stats["logprob_mismatch/max"] = gap.max()
                    if importance is not None:
                        values = importance[:, 0] if importance.size(1) == 1 else importance[mask.bool()]
                        stats |= {f"sampling/importance_sampling_ratio/{name}": getattr(values, name)() for name in ("mean", "min", "max")}
                for name, value in stats.items():
                    totals.setdefault(name, []).append(float(value.detach()))
    summary = {name: aggregate(name, values) for name, values in totals.items()}
    summary["skipped"] = float(skipped_steps)
    if skipped_steps:
        summary["reason"] = "non-finite gradient"
    return summary


def reference_logprobs(accelerator, reference, batch: TrajectoryBatch, micro_batches: list[list[int]], temperature: float) -> torch.Tensor:
    """log pi_ref on the kept rows, (B, T), zero on the dropped rows (which never reach the loss). It runs in the
    update's own micro-batches, so it never holds more than one micro-batch's logits, and under the same autocast as
    the policy's forward (accelerate wraps only the prepared model): before any update the two are one computation,
    and the KL is 0."""
    values = torch.zeros_like(batch.mask)
    with accelerator.autocast():
        for rows in micro_batches:
            if rows:
                values[rows] = reference(batch.rows(rows), temperature)
    return values


def aggregate(name: str, values: list[float]) -> float:
    """A step's value of a metric logged per micro-batch: the extreme for /max and /min, else the mean."""
    if name.endswith("/max"):
        return max(values)
    if name.endswith("/min"):
        return min(values)
    return sum(values) / len(values)


def split_evenly(items: list[int], parts: int) -> list[list[int]]:
    """`parts` lists, as even as possible, in order (some empty when there are fewer items than parts)."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


def rollout_backend(policy: Policy, model, agent, seed: int, sleep_mode: bool = False):
    """The default: a transformers backend generating with the very module being trained (no copy). With a vllm:
    requester, a vLLM engine loaded from the same weights, which the trainer updates after every step (with LoRA,
    the engine serves the base weights and the adapter the trainer saves)."""
    if policy.rollout_engine == "vllm":
        from agents.backends.vllm_local import VLLMBackend

        engine = {"enable_lora": True, "max_lora_rank": policy.lora.r, "max_loras": 1} if policy.lora is not None else {}
        engine |= {"enable_sleep_mode": True} if sleep_mode else {}
        return VLLMBackend.load(policy.weights, **{**engine, **agent.backends.options_for("vllm"), "seed": seed})
    return TransformersBackend(model, policy.tokenizer, name=policy.spec, max_batch_size=agent.backends.max_batch_size, seed=seed)


def stop_if_backends_fail(accelerator, states: list[AgentState], failed: torch.Tensor) -> None:
    """A dead coder server or a crashed backend makes most rollouts fail: stop with its message rather than train on
    nothing; the last checkpoint stays as it was."""
    share = accelerator.reduce(failed.float().mean().to(accelerator.device), reduction="mean")
    if float(share) >= ERROR_SHARE_TO_STOP:
        example = next((s.error for s in states if s.status == "error"), "a failure on another process")
        raise DuetError(f"{float(share):.0%} of this step's rollouts failed ({example}); fix it and continue with --resume")


def save(accelerator, args, step: int, model, policy: Policy, remembered: dict, optimizer, scheduler, log) -> None:
    try:
        path = save_checkpoint(
            accelerator, args.output_dir, step, model, policy.tokenizer, policy.checkpoint_info(remembered),
            {"step": step}, optimizer, scheduler, args.save_total_limit,
        )
        log.note(f"saved {path}")
    except OSError as error:
        log.note(f"could not save checkpoint-{step} ({error.strerror or error}); the previous checkpoint is intact, training goes on")
