"""GRPO's math as pure functions on tensors: group advantages, per-token log-probabilities, and the clipped loss.

Shapes: B trajectories in a micro-batch, T token positions (the part of the sequence after the shortest prompt), G
trajectories per question. `mask` is the trajectory's loss mask (1 on the requester's own tokens, 0 on the prompt,
on inserted tool results and on padding), so nothing the requester did not write can carry a gradient.

The formulas follow TRL's GRPOTrainer (1.16), term by term, so a TRL user can check them line by line.
"""

from __future__ import annotations

from typing import Literal

import torch

ScaleRewards = Literal["group", "batch", "none"]
LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
STD_EPSILON = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: ScaleRewards, batch_std: torch.Tensor | None = None) -> torch.Tensor:
    """A_i = (r_i - mean(r_group)) / (std + 1e-4), rewards laid out group after group.

    std is the group's own (unbiased) standard deviation for "group", the whole batch's for "batch" (pass it as
    `batch_std` when the batch spans several processes), and no division at all for "none" (Dr. GRPO)."""
    grouped = rewards.view(-1, group_size)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale_rewards == "group":
        return advantages / (grouped.std(dim=1).repeat_interleave(group_size) + STD_EPSILON)
    if scale_rewards == "batch":
        return advantages / ((rewards.std() if batch_std is None else batch_std) + STD_EPSILON)
    return advantages


def equal_reward_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """True for each group whose rewards are all the same: its advantages are all zero, so it teaches nothing but
    still dilutes the normalisation; the published recipe drops such groups before the update."""
    grouped = rewards.view(-1, group_size)
    return (grouped == grouped[:, :1]).all(dim=1)


LOGPROB_CHUNK = 128  # positions per chunk: 128 x a 152k vocabulary x 4 bytes = 78 MB of fp32, two such at a time


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, chunk_size: int = LOGPROB_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(token) and the entropy of pi at each position, pi = softmax(logits / temperature): the distribution the
    rollout sampled from (before top-p), so these compare directly with the backend's recorded log-probabilities.

        z_t       = logits_t / temperature, in fp32
        logp_t    = log_softmax(z_t)[y_t] = z_t[y_t] - logsumexp(z_t)
        H_t       = -sum_v p_t,v log p_t,v                  (a statistic: no gradient flows through it)
        gradient  d logp_t / d logits_t,v = (1[v = y_t] - p_t,v) / temperature

    Computed `chunk_size` positions at a time, as TRL's selective_log_softmax loops over rows: the only (B, T, V)
    tensors are the logits themselves and, in backward, their gradient (in the logits' dtype); the fp32 softmax
    exists for one chunk at a time, in forward and again, recomputed, in backward. Nothing else is kept for backward.

    logits: (B, T, V) scores for the tokens at (B, T); returns two (B, T) fp32 tensors."""
    return ChunkedTokenLogprobs.apply(logits, tokens, temperature, chunk_size)


class ChunkedTokenLogprobs(torch.autograd.Function):
    """token_logprobs' forward and backward, one chunk of positions at a time (see token_logprobs for the math)."""

    @staticmethod
    def forward(ctx, logits, tokens, temperature, chunk_size):
        chosen = torch.empty(tokens.shape, dtype=torch.float32, device=logits.device)
        entropy = torch.empty_like(chosen)
        for at in chunks_of_positions(tokens.shape, chunk_size):
            log_p = torch.log_softmax(logits[at].float() / temperature, dim=-1)  # (n, V): one chunk, at most two alive
            chosen[at] = log_p.gather(-1, tokens[at].unsqueeze(-1)).squeeze(-1)
            entropy[at] = -log_p.exp().mul_(log_p).sum(-1)
        ctx.save_for_backward(logits, tokens)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return chosen, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_chosen, grad_entropy):
        logits, tokens = ctx.saved_tensors
        grad_logits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for at in chunks_of_positions(tokens.shape, ctx.chunk_size):
            p = torch.softmax(logits[at].float() / ctx.temperature, dim=-1)  # (n, V), one chunk, recomputed
            g = grad_chosen[at].unsqueeze(-1)  # (n, 1)
            grad_logits[at] = p.mul_(-g).scatter_add_(-1, tokens[at].unsqueeze(-1), g).div_(ctx.temperature)
        return grad_logits, None, None, None


def chunks_of_positions(shape: torch.Size, chunk_size: int):
    """Index tuples (row, slice of positions) covering a (B, T) grid, at most chunk_size positions each."""
    rows, length = shape
    for row in range(rows):
        for start in range(0, length, chunk_size):
            yield row, slice(start, start + chunk_size)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimated with k3 (Schulman): exp(ref - logp) - (ref - logp) - 1, which is >= 0
    and unbiased for samples drawn from pi."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


SamplerCorrection = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def sampler_correction(
    old_logprobs: torch.Tensor, sampled_logprobs: torch.Tensor, mask: torch.Tensor, mode: SamplerCorrection,
    clip_min: float | None, clip_max: float | None,
) -> torch.Tensor:
    """Importance weights for rollouts sampled by another engine (vLLM) than the one being trained, as TRL's
    vllm_importance_sampling_* (truncated importance sampling): rho = pi_trainer(old) / pi_sampler, per token or per
    sequence (the product over the requester's tokens), then clipped into [clip_min, clip_max] (truncate) or set to 0
    outside it (mask). Returns (B, T) for token modes, (B, 1) for sequence modes."""
    difference = torch.where(mask.bool(), old_logprobs - sampled_logprobs, 0.0).nan_to_num(0.0)
    if mode.startswith("sequence"):
        difference = difference.sum(-1, keepdim=True)
    ratio = torch.exp(difference)
    low = -torch.inf if clip_min is None else clip_min
    high = torch.inf if clip_max is None else clip_max
    if mode.endswith("truncate"):
        return ratio.clamp(min=low, max=high)
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: LossType,
    epsilon_low: float,
    epsilon_high: float,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    use_bias_correction_kl: bool = True,
    num_items_in_batch: float | None = None,
    max_completion_length: int | None = None,
    gradient_accumulation_steps: int = 1,
    importance_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate with an optional KL penalty, normalised as `loss_type` says.

    ratio_t   = exp(logp_t - old_logp_t)
    L_t       = -min(ratio_t * A, clip(ratio_t, 1 - epsilon_low, 1 + epsilon_high) * A) * rho_t + beta * KL_t
    rho_t     = `importance_weights` (sampler_correction) when another engine sampled the rollouts, else 1
    KL_t      = k3(logp_t, ref_logp_t), times ratio_t with use_bias_correction_kl (the old policy sampled the tokens)
    grpo:     mean over sequences of (sum_t mask * L_t / sum_t mask), divided by gradient_accumulation_steps
    bnpo:     sum(mask * L) / sum(mask) over the micro-batch, divided by gradient_accumulation_steps
    dr_grpo:  sum(mask * L) / (B * max_completion_length), divided by gradient_accumulation_steps
    dapo:     sum(mask * L) / (num_items_in_batch / num_processes): tokens of the whole step, not the micro-batch

    For dapo, pass num_items_in_batch already divided by the number of processes. Masked tokens get exactly zero
    gradient, whatever values they hold (even inf or nan): they are replaced by zeros before any arithmetic, and every
    term is multiplied by the mask before it is summed.
    """
    keep = mask.bool()
    logprobs = torch.where(keep, logprobs, 0.0)
    old_logprobs = torch.where(keep, old_logprobs, 0.0)
    ref_logprobs = torch.where(keep, ref_logprobs, 0.0) if ref_logprobs is not None else None
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    advantage = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * advantage, clipped * advantage)
    if importance_weights is not None:
        per_token = per_token * importance_weights
    kl = None
    if beta != 0.0:
        kl = kl_k3(logprobs, ref_logprobs)
        if use_bias_correction_kl:
            kl = kl * ratio
        per_token = per_token + beta * kl
    masked = per_token * mask
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / gradient_accumulation_steps
    elif loss_type == "bnpo":
        loss = masked.sum() / mask.sum().clamp(min=1.0) / gradient_accumulation_steps
    elif loss_type == "dr_grpo":
        loss = masked.sum() / (per_token.size(0) * max_completion_length) / gradient_accumulation_steps
    elif loss_type == "dapo":
        loss = masked.sum() / num_items_in_batch
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    stats = clip_statistics(ratio, advantage, mask, epsilon_low, epsilon_high)
    if kl is not None:
        stats["kl"] = masked_mean(kl, mask)
    return loss, stats


def clip_statistics(ratio, advantage, mask, epsilon_low: float, epsilon_high: float) -> dict[str, torch.Tensor]:
    """Share of the requester's tokens whose ratio was clipped where the clip binds: below for negative advantages,
    above for positive ones (TRL's clip_ratio/low_mean and /high_mean)."""
    low = (ratio < 1 - epsilon_low) & (advantage < 0)
    high = (ratio > 1 + epsilon_high) & (advantage > 0)
    return {
        "clip_ratio/low": masked_mean(low.to(mask.dtype), mask),
        "clip_ratio/high": masked_mean(high.to(mask.dtype), mask),
        "clip_ratio/region": masked_mean((low | high).to(mask.dtype), mask),
    }


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
