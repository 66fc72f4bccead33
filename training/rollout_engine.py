"""What samples the rollouts, behind the one small interface the trainer's loop calls:

    backend             the requester's backend: the graph samples every rollout through it (one graph, principle 1)
    before_update()     the rollouts are done: free what the update needs
    after_update(model) the update is done: make the next rollouts sample the new weights; returns its timings
    sampled_elsewhere   whether another engine than the trained module sampled, which decides the old policy

Two engines stand behind it. The default generates in-process with transformers, with the very module being
trained: nothing to do around an update, and the log-probabilities it records are the old policy's. With a vllm:
requester, a vLLM engine loaded from the same weights samples: it sleeps through the update (with
vllm_enable_sleep_mode), then wakes and gets the new weights; the old policy is the trainer's own recomputation of
the rollouts, corrected for the two engines' difference (see trainer.OldPolicy).
"""

from __future__ import annotations

import time
from pathlib import Path

from agents.backends.base import Backend
from agents.backends.transformers_local import TransformersBackend
from training.policy import Policy


def rollout_backend(policy: Policy, model, agent, seed: int, sleep_mode: bool = False) -> Backend:
    """The default: a transformers backend generating with the very module being trained (no copy). With a vllm:
    requester, a vLLM engine loaded from the same weights, which the trainer updates after every step (with LoRA,
    the engine serves the base weights and the adapter the trainer saves)."""
    if policy.rollout_engine == "vllm":
        from agents.backends.vllm_local import VLLMBackend

        engine = {"enable_lora": True, "max_lora_rank": policy.lora.r, "max_loras": 1} if policy.lora is not None else {}
        engine |= {"enable_sleep_mode": True} if sleep_mode else {}
        return VLLMBackend.load(policy.weights, **{**engine, **agent.backends.options_for("vllm"), "seed": seed})
    return TransformersBackend(model, policy.tokenizer, name=policy.spec, max_batch_size=agent.backends.max_batch_size, seed=seed)


def rollout_engine(policy: Policy, backend: Backend, sleep_mode: bool, adapter_folder: Path) -> TransformersEngine | VLLMEngine:
    """The engine for the policy's spec, around the backend rollout_backend made for it."""
    if policy.rollout_engine == "vllm":
        return VLLMEngine(backend, policy, sleep_mode, adapter_folder)
    return TransformersEngine(backend)


class TransformersEngine:
    """The backend generates with the very module being trained, so it always samples the current weights: nothing
    to free before an update, nothing to push after it, and the log-probabilities it records are the old policy's."""

    sampled_elsewhere = False

    def __init__(self, backend: Backend):
        self.backend = backend

    def before_update(self) -> None:
        pass

    def after_update(self, model) -> dict[str, float]:
        return {}


class VLLMEngine:
    """A vLLM engine with its own copy of the weights. It sleeps through the update when sleep mode is on (its GPU
    memory freed; a LoRA run keeps the base weights, since only adapters are pushed), and after the update wakes
    and gets the new weights (Policy.push_to). Resuming pushes the loaded weights the same way."""

    sampled_elsewhere = True

    def __init__(self, backend: Backend, policy: Policy, sleep_mode: bool, adapter_folder: Path):
        self.backend, self.policy = backend, policy
        self.sleep_mode, self.adapter_folder = sleep_mode, adapter_folder
        self.asleep = False

    def before_update(self) -> None:
        if self.sleep_mode:
            self.backend.sleep(keep_weights=self.policy.lora is not None)
            self.asleep = True

    def after_update(self, model) -> dict[str, float]:
        """Wake (if asleep) and push `model`'s weights; the seconds it took are the step's time/weight_sync."""
        began = time.perf_counter()
        if self.asleep:
            self.backend.wake_up()
            self.asleep = False
        self.policy.push_to(self.backend, model, self.adapter_folder)
        return {"weight_sync": time.perf_counter() - began}
