"""The model being trained, and the frozen reference it is kept close to.

The policy is one set of weights: the trainer updates it, and the rollout backend generates with the very same module
(no copy, no reload between steps). With LoRA, only the adapter trains, and the reference is the same module with
the adapter switched off, so no second model is ever loaded; with beta = 0 there is no reference at all.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from agents.errors import DuetError
from agents.models import load_causal_lm, parse_spec, resolve_weights
from training.batch import TrajectoryBatch, policy_logprobs
from training.config import ModelSettings


class Policy:
    def __init__(self, settings: ModelSettings, device: torch.device, role: str = "requester"):
        """`role` names the model of `settings` being trained: the requester, or (a coder's cold start) the coder."""
        self.spec = getattr(settings, role)
        parsed = parse_spec(self.spec)
        if parsed.kind not in ("default", "local", "hub", "vllm"):
            raise DuetError(f"model.{role} {self.spec!r}: training updates the {role}'s weights in this process, "
                            "so it must be default, a local folder, a hub id, or vllm:one of these"
                            + (" (the coder may be any spec)" if role == "requester" else ""))
        self.rollout_engine = "vllm" if parsed.kind == "vllm" else "transformers"
        weights = resolve_weights(parsed)
        self.weights = weights
        self.model, self.tokenizer = load_causal_lm(weights, settings.dtype, str(device))
        self.lora = settings.lora
        if settings.lora is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=settings.lora.r, lora_alpha=settings.lora.lora_alpha, lora_dropout=settings.lora.lora_dropout,
                target_modules=settings.lora.target_modules, task_type="CAUSAL_LM",
            )
            self.model = get_peft_model(self.model, config)
        if settings.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if settings.lora is not None:
                self.model.enable_input_require_grads()

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def load_weights(self, checkpoint: Path) -> None:
        """Resume: the trained weights of a checkpoint (the whole model, or only the adapter) into this policy."""
        from safetensors.torch import load_file

        if self.lora is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(checkpoint / "adapter_model.safetensors"))
        else:
            self.model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)

    def push_to(self, engine, model, folder: Path) -> None:
        """Hand the trained weights to an inference engine (vLLM): a LoRA adapter as an adapter, saved to `folder`
        (a few MB), else every weight under its checkpoint name, in memory."""
        if self.lora is not None:
            model.save_pretrained(folder)
            engine.use_adapter(str(folder))
        else:
            engine.load_weights([(name, tensor.detach()) for name, tensor in model.state_dict().items()])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def reference(self, beta: float):
        """A function batch -> reference log-probabilities at the batch's kept positions, or None when beta is 0."""
        if beta == 0:
            return None
        if self.lora is not None:
            def adapter_off(batch: TrajectoryBatch, temperature: float) -> torch.Tensor:
                with torch.no_grad(), self.model.disable_adapter():
                    return policy_logprobs(self.model, batch, temperature)[0]

            return adapter_off
        frozen = copy.deepcopy(self.model).eval().requires_grad_(False)

        def frozen_copy(batch: TrajectoryBatch, temperature: float) -> torch.Tensor:
            with torch.no_grad():
                return policy_logprobs(frozen, batch, temperature)[0]

        return frozen_copy

    def checkpoint_info(self, remembered: dict[str, dict]) -> dict:
        """duet.json of a checkpoint: an adapter names its base model by spec, so loading it recreates the chain; and
        the settings it was trained under (`AgentConfig.remembered()`), which graph.build.as_trained applies."""
        return {"base": self.spec if self.lora is not None else None, **remembered}


def weights_checksum(model) -> float:
    """A float64 sum of all trainable weights and their squares: equal across processes when they are in sync."""
    total = torch.zeros((), dtype=torch.float64)
    for parameter in model.parameters():
        if parameter.requires_grad:
            values = parameter.detach().to(torch.float64).cpu()
            total += values.sum() + (values * values).sum()
    return float(total)

