"""Makes vLLM record the same log-probabilities as every other duet backend: log_softmax(logits / T) of each sampled
token, before top-p filtering.

vLLM has no such mode: "raw" values ignore the temperature and "processed" ones are renormalised over the top-p
nucleus. So this logits processor (vLLM's public V1 extension point) replaces each row's logits by
log_softmax(logits / T), with T carried in the request's `extra_args`, and vLLM samples those at temperature 1 with
the request's top-p: the same nucleus and the same distribution. With `logprobs_mode="processed_logits"`, the value
vLLM reports for a sampled token is its processed logit, which top-p never masks, so it is exactly
log_softmax(logits / T)[token]. Greedy rows use T = 1, like the transformers backend.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

TEMPERATURE_KEY = "duet_temperature"


class TemperedLogSoftmax(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.temperatures: dict[int, float] = {}

    def is_argmax_invariant(self) -> bool:
        """Argmax is unchanged, but vLLM applies invariant processors only to sampled rows, and greedy rows need
        their log-probabilities normalised too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.temperatures.pop(index, None)
        for index, params, _, _ in batch_update.added:
            self.temperatures[index] = float((params.extra_args or {}).get(TEMPERATURE_KEY) or 1.0)
        for source, target, direction in batch_update.moved:
            moving, replaced = self.temperatures.pop(source, 1.0), self.temperatures.pop(target, 1.0)
            self.temperatures[target] = moving
            if direction == MoveDirectionality.SWAP:
                self.temperatures[source] = replaced

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        temperatures = torch.ones(logits.shape[0], 1, dtype=logits.dtype, device=logits.device)
        for index, temperature in self.temperatures.items():
            if index < logits.shape[0]:
                temperatures[index] = temperature
        return torch.log_softmax(logits / temperatures, dim=-1)
