"""GRPO training of the requester, through the same graph `duet ask` runs. Read it top to bottom:

    for each step:
        questions   the step's share of the data stream (a pure function of the step: resumable)
        rollouts    G trajectories per question through the compiled graph, sampled by the rollout engine
        rewards     named components (answer, format, plugged-in ones), weighted by the step's schedule
        advantages  normalised within each group; groups whose rewards are all equal are dropped
        update      num_iterations optimizer steps on the kept trajectories, in gradient-accumulated micro-batches
        weights     the rollout engine gets the new weights (nothing to do when it is the trained module itself)
        log, save   metrics.jsonl, trackers, curves, checkpoint-N

Distribution, mixed precision and gradient accumulation come from accelerate: under `accelerate launch` every
process rolls out its own questions with its own copy of the policy, and DDP keeps the copies identical.
Rollouts live in rollout.py, the engine that samples them in rollout_engine.py, the math in grpo.py, tensors in
batch.py, checkpoints in checkpoint.py, logging in run_log.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.errors import DuetError
from graph.build import Team
from graph.state import AgentState
from training.accelerate_setup import make_accelerator
from training.batch import TrajectoryBatch, policy_logprobs
from training.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from training.config import GRPORunConfig, GRPOSettings
from training.data import TrainingStream
from training.difficulty import load_pass_rates
from training.evaluate import record_of
from training.grpo import equal_reward_groups, group_advantages, grpo_loss, sampler_correction
from training.policy import Policy, weights_checksum
from training.rewards import RewardScorer
from training.rollout import rollout_groups
from training.rollout_engine import rollout_backend, rollout_engine
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
    trained = accelerator.unwrap_model(model)  # the module itself: what the rollout engine samples with, or is given

    # ---- the rollout engine and the agent: the same graph as `duet ask`, with the policy as requester and a frozen coder
    agent = config.agent.model_copy(deep=True)
    agent.requester.temperature, agent.requester.top_p = args.temperature, args.top_p
    agent.backends.device = str(accelerator.device)  # a local coder sits beside this process's policy
    backend = rollout_backend(policy, trained, agent, args.seed + rank, args.vllm_enable_sleep_mode)
    engine = rollout_engine(policy, backend, args.vllm_enable_sleep_mode, args.output_dir / f"rollout-adapter-rank{rank}")
    team = Team(policy.spec, config.model.coder, agent, requester_backend=engine.backend)
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
        engine.after_update(trained)  # the loaded weights are new to an engine with a copy of its own
    log = RunLog(accelerator, args, config, start, skipped)
    if on_start:
        on_start(accelerator, start)

    loop = asyncio.new_event_loop()
    try:
        for step in range(start, args.max_steps):
            timings, step_began = {}, time.perf_counter()

            # ---- questions and rollouts (in eval mode, as the reference scores them; optimize() trains)
            first = (step * world + rank) * questions_per_step
            step_rows = stream.take(first, questions_per_step)
            began = time.perf_counter()
            model.eval()
            group, states = loop.run_until_complete(rollout_groups(graph, agent, step_rows, args.num_generations, args.seed, step))
            timings["rollout"] = time.perf_counter() - began
            engine.before_update()  # nothing samples again until after_update: a vLLM engine may sleep from here

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

            # ---- the update, then the new weights to the rollout engine
            began = time.perf_counter()
            batch = TrajectoryBatch.from_trajectories([s.trajectory for s in states], policy.pad_id).to(accelerator.device)
            parts = micro_batches(kept, args.gradient_accumulation_steps)
            ref_logprobs = reference_logprobs(accelerator, reference, batch, parts, args.temperature) if reference is not None else None
            timings["reference"] = time.perf_counter() - began
            began = time.perf_counter()
            update = optimize(accelerator, model, optimizer, scheduler, batch, parts, ref_logprobs, advantages.to(accelerator.device), config,
                              sampled_elsewhere=engine.sampled_elsewhere)
            timings["update"] = time.perf_counter() - began
            timings |= engine.after_update(trained)

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
        loop.run_until_complete(engine.backend.aclose())
        loop.close()
        log.close()
    return args.output_dir / "checkpoint-latest"


@dataclass
class MicroBatch:
    """Rows of the step's TrajectoryBatch that go through one forward and backward pass together."""

    rows: list[int]
    weight: float  # 1.0, or 0.0 for a stand-in, whose gradient must be zero


def micro_batches(kept: list[int], parts: int) -> list[MicroBatch]:
    """The kept trajectories in exactly `parts` micro-batches, as even as possible, the same on every pass. DDP needs
    every process to take part in every backward pass: where a process has fewer kept trajectories than parts, each
    empty micro-batch becomes a stand-in, row 0 weighted 0 (a zero gradient, and nothing logged)."""
    return [MicroBatch(rows, 1.0) if rows else MicroBatch([0], 0.0) for rows in split_evenly(kept, parts)]


def optimize(
    accelerator, model, optimizer, scheduler, batch: TrajectoryBatch, parts: list[MicroBatch], ref_logprobs, advantages,
    config: GRPORunConfig, sampled_elsewhere: bool = False,
) -> dict:
    """num_iterations optimizer steps over the kept trajectories, each accumulated over the same micro-batches
    (micro_batches), then the step's metrics. Each pass is: forward, the old policy (OldPolicy), the loss
    (micro_batch_loss), backward, and after the last micro-batch the optimizer step (optimizer_step)."""
    args = config.grpo
    kept = [row for part in parts if part.weight for row in part.rows]
    everyone_kept = int(accelerator.reduce(torch.tensor(len(kept), device=accelerator.device), reduction="sum"))
    if everyone_kept == 0:
        return {"skipped": 1.0, "reason": "every group was dropped"}
    tokens_everywhere = accelerator.reduce(batch.mask[kept].sum() if kept else torch.zeros((), device=accelerator.device), reduction="sum")
    tokens_per_process = float(tokens_everywhere.clamp(min=1)) / accelerator.num_processes
    old_policy = OldPolicy(args, sampled_elsewhere)
    metrics = UpdateMetrics()
    for iteration in range(args.num_iterations):
        model.train()
        for index, part in enumerate(parts):
            micro = batch.rows(part.rows)
            with accelerator.accumulate(model):
                logprobs, entropy = policy_logprobs(model, micro, args.temperature)
                old, importance = old_policy(index, micro, logprobs)
                loss, stats = micro_batch_loss(config, logprobs, old, importance, micro, part.rows, advantages, ref_logprobs, tokens_per_process)
                accelerator.backward(loss * part.weight * args.gradient_accumulation_steps)  # see micro_batch_loss
                if accelerator.sync_gradients:
                    metrics.optimizer_step(*optimizer_step(accelerator, model, optimizer, scheduler, args.max_grad_norm))
            if part.weight:
                metrics.add(micro_batch_metrics(stats, loss, logprobs, entropy, importance, micro, first_pass=iteration == 0))
    return metrics.summary()


class OldPolicy:
    """pi_old of each micro-batch for grpo_loss's ratio, and the importance weights for the sampler (or None).

    The old policy is the one that sampled the rollouts. When the trainer's own weights sampled them (the default
    backend), the log-probabilities the backend recorded are the old policy's. When another engine sampled them
    (`sampled_elsewhere`: vLLM), the old policy is the trainer's view of the same weights, read off the first pass
    before any update (and kept, by micro-batch, for the later passes), and each trajectory is reweighted by
    sampler_correction for the engines' difference."""

    def __init__(self, args: GRPOSettings, sampled_elsewhere: bool):
        self.args, self.sampled_elsewhere = args, sampled_elsewhere
        self.first_pass: dict[int, torch.Tensor] = {}

    def __call__(self, index: int, micro: TrajectoryBatch, logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.sampled_elsewhere:
            return micro.old_logprobs, None
        args = self.args
        old = self.first_pass.setdefault(index, logprobs.detach())
        if not args.vllm_importance_sampling_correction:
            return old, None
        importance = sampler_correction(
            old, micro.old_logprobs, micro.mask, args.vllm_importance_sampling_mode,
            args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max,
        )
        return old, importance


def micro_batch_loss(
    config: GRPORunConfig, logprobs, old_logprobs, importance, micro: TrajectoryBatch, rows: list[int], advantages, ref_logprobs,
    tokens_per_process: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """grpo_loss on one micro-batch (`rows` of the step's advantages and reference), normalised as TRL does:

        dapo      by the kept requester tokens of the whole step on all processes, divided by the number of processes
                  (`tokens_per_process`: DDP averages the processes' gradients)
        others    by gradient_accumulation_steps, inside grpo_loss (and dr_grpo by B x max_total_tokens)

    accelerate's backward divides by gradient_accumulation_steps once more, so the caller multiplies that back, and
    by the micro-batch's weight (0 for a stand-in)."""
    args = config.grpo
    return grpo_loss(
        logprobs, old_logprobs, advantages[rows], micro.mask,
        loss_type=args.loss_type, epsilon_low=args.epsilon, epsilon_high=args.epsilon_high or args.epsilon,
        beta=args.beta, ref_logprobs=ref_logprobs[rows] if ref_logprobs is not None else None,
        use_bias_correction_kl=args.use_bias_correction_kl,
        num_items_in_batch=tokens_per_process,
        max_completion_length=config.agent.limits.max_total_tokens,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        importance_weights=importance,
    )


def optimizer_step(accelerator, model, optimizer, scheduler, max_grad_norm: float) -> tuple[float, bool]:
    """Clip the accumulated gradient to max_grad_norm and step, unless its norm is not finite (a nan or inf loss
    somewhere): then the weights stay as they were. The schedule steps either way, once per optimizer step on every
    process alike. Returns the norm before clipping, and whether the weights moved."""
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    stepped = bool(torch.isfinite(grad_norm))
    if stepped:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return float(grad_norm), stepped


def micro_batch_metrics(stats: dict, loss, logprobs, entropy, importance, micro: TrajectoryBatch, first_pass: bool) -> dict[str, torch.Tensor]:
    """What a micro-batch of kept trajectories logs: grpo_loss's statistics, the loss and the mean entropy; on the
    first pass, before any update (the trainer's view of the very weights that sampled), how far the trainer's
    log-probabilities are from the sampler's, and the importance weights' range."""
    mask = micro.mask
    metrics = {**stats, "loss": loss.detach(), "entropy": (entropy * mask).sum() / mask.sum().clamp(min=1)}
    if first_pass:
        gap = (logprobs.detach() - micro.old_logprobs).abs() * mask
        metrics["logprob_mismatch/mean"] = gap.sum() / mask.sum().clamp(min=1)
        metrics["logprob_mismatch/max"] = gap.max()
        if importance is not None:
            values = importance[:, 0] if importance.size(1) == 1 else importance[mask.bool()]
            metrics |= {f"sampling/importance_sampling_ratio/{name}": getattr(values, name)() for name in ("mean", "min", "max")}
    return metrics


class UpdateMetrics:
    """The update's metrics, each logged per micro-batch (grad_norm per optimizer step) and reduced to one value for
    the step by aggregate; `skipped` counts the optimizer steps skipped for a non-finite gradient."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}
        self.skipped_steps = 0

    def add(self, metrics: dict) -> None:
        for name, value in metrics.items():
            self.values.setdefault(name, []).append(float(value.detach() if torch.is_tensor(value) else value))

    def optimizer_step(self, grad_norm: float, stepped: bool) -> None:
        self.add({"grad_norm": grad_norm})
        self.skipped_steps += not stepped

    def summary(self) -> dict:
        summary = {name: aggregate(name, values) for name, values in self.values.items()}
        summary["skipped"] = float(self.skipped_steps)
        if self.skipped_steps:
            summary["reason"] = "non-finite gradient"
        return summary


def reference_logprobs(accelerator, reference, batch: TrajectoryBatch, parts: list[MicroBatch], temperature: float) -> torch.Tensor:
    """log pi_ref on the kept rows, (B, T), zero on the dropped rows (which never reach the loss). It runs in the
    update's own micro-batches (stand-ins skipped), so it never holds more than one micro-batch's logits, and under
    the same autocast as the policy's forward (accelerate wraps only the prepared model): before any update the two
    are one computation, and the KL is 0."""
    values = torch.zeros_like(batch.mask)
    with accelerator.autocast():
        for part in parts:
            if part.weight:
                values[part.rows] = reference(batch.rows(part.rows), temperature)
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
