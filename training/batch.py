"""Trajectories as padded tensors, and the policy's log-probabilities on them.

The ids and the loss mask come straight from each trajectory (nothing is decoded or re-tokenized), and so do the
log-probabilities the rollout backend recorded for the requester's tokens. Only positions from the earliest
requester token onwards get logits (`logits_to_keep`): the prompt, most of every sequence, is never projected onto
the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from graph.state import Trajectory


@dataclass
class TrajectoryBatch:
    """B right-padded sequences. `input_ids` and `attention_mask` are (B, L); the other tensors are (B, T) and
    describe the last T = L - start positions, where `start` is the earliest requester token of any row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    old_logprobs: torch.Tensor

    @classmethod
    def from_trajectories(cls, trajectories: list[Trajectory], pad_id: int, with_logprobs: bool = True) -> TrajectoryBatch:
        """`with_logprobs=False` for supervised traces, which were not sampled by this model (zeros instead)."""
        width = max(len(t.token_ids) for t in trajectories)
        input_ids = torch.full((len(trajectories), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(trajectories), width), dtype=torch.long)
        mask = torch.zeros((len(trajectories), width))
        recorded = torch.zeros((len(trajectories), width))
        for row, trajectory in enumerate(trajectories):
            ids = trajectory.token_ids
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            mask[row, : len(ids)] = torch.tensor(trajectory.loss_mask, dtype=torch.float)
            if with_logprobs:
                recorded[row, : len(ids)] = torch.tensor(_recorded_logprobs(trajectory))
        start = max(1, int(mask.any(dim=0).nonzero()[0])) if mask.any() else width - 1
        return cls(input_ids, attention, input_ids[:, start:], mask[:, start:], recorded[:, start:])

    @property
    def logits_to_keep(self) -> int:
        return self.tokens.shape[1]

    def rows(self, index: list[int] | torch.Tensor) -> TrajectoryBatch:
        return TrajectoryBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        return TrajectoryBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _recorded_logprobs(trajectory: Trajectory) -> list[float]:
    """The backend's log-probability for each requester token, 0 elsewhere (masked out anyway)."""
    values = []
    for segment in trajectory.segments:
        if segment.source == "requester":
            if segment.logprobs is None or len(segment.logprobs) != len(segment.token_ids):
                raise ValueError("a requester segment lacks its sampling log-probabilities; the rollout backend must record them")
            values += segment.logprobs
        else:
            values += [0.0] * len(segment.token_ids)
    return values


def policy_logprobs(model, batch: TrajectoryBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(token) and entropy at the batch's last T positions, from one forward pass of `model`.

    Logits at position i score the token at i + 1, so the T kept tokens need the logits of positions L-T-1 .. L-2:
    exactly those are projected onto the vocabulary (`logits_to_keep` as indices), so the (B, T, V) logits are the
    model's own output tensor, not a slice of a larger one (whose gradient would be a second (B, T + 1, V) tensor)."""
    from training.grpo import token_logprobs

    width = batch.input_ids.shape[1]
    positions = torch.arange(width - batch.logits_to_keep - 1, width - 1, device=batch.input_ids.device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=positions, use_cache=False).logits
    return token_logprobs(logits, batch.tokens, temperature)
