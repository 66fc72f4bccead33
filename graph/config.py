"""The runtime's tunables, one pydantic model per concern; unknown keys are errors."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.coder import CoderSettings
from agents.requester import RequesterSettings
from agents.sandbox import SandboxLimits
from agents.tools.registry import ToolSettings


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunLimits(Strict):
    max_calls: int = Field(4, ge=0, description="requests per question; unset: as the checkpoint was trained, else 4")
    max_total_tokens: int = Field(1536, ge=1, description="requester and inserted tokens per question, prompt excluded; unset: as the checkpoint was trained, else 1536")


class BackendSettings(Strict):
    """How local models run. `vllm_engine` goes to vllm.LLM as keyword arguments (e.g. enforce_eager: true,
    gpu_memory_utilization: 0.5, tensor_parallel_size: 2)."""

    dtype: str = Field("float32", description="torch dtype of transformers models: float32, bfloat16, float16")
    device: str = Field("cpu", description="torch device of transformers models: cpu, cuda, cuda:1")
    max_batch_size: int = Field(32, ge=1, description="rows per decoding batch")
    seed: int = 0
    vllm_engine: dict[str, Any] = Field(default_factory=dict)
    openai_api_key: str | None = Field(None, description="bearer token for openai: specs; OPENAI_API_KEY is used when unset")

    def options_for(self, kind: str) -> dict[str, Any]:
        if kind == "openai":
            return {"api_key": self.openai_api_key or os.environ.get("OPENAI_API_KEY")}
        if kind == "vllm":
            return {"seed": self.seed, "max_batch_size": self.max_batch_size, **self.vllm_engine}
        return {"dtype": self.dtype, "device": self.device, "max_batch_size": self.max_batch_size, "seed": self.seed}


# What a checkpoint remembers of the settings it was trained under (its duet.json), by section of AgentConfig: the
# prompt and protocol it learned (few-shot examples, mode, the tools its prompt listed) and the limits its
# trajectories were cut to.
REMEMBERED: dict[str, tuple[str, ...]] = {
    "requester": ("few_shot", "mode", "max_segment_tokens"), "limits": ("max_calls", "max_total_tokens"), "tools": ("registry", "default"),
}


class AgentConfig(Strict):
    requester: RequesterSettings = Field(default_factory=RequesterSettings)
    coder: CoderSettings = Field(default_factory=CoderSettings)
    limits: RunLimits = Field(default_factory=RunLimits)
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits)
    tools: ToolSettings = Field(default_factory=ToolSettings, description="the tools the requester may ask (agents/tools); default: the coder alone")
    backends: BackendSettings = Field(default_factory=BackendSettings)

    def remembered(self) -> dict[str, dict[str, Any]]:
        """What a checkpoint trained under these settings writes into its duet.json (see graph.build.as_trained)."""
        sections = {"requester": self.requester.filled(), "limits": self.limits, "tools": self.tools}
        return {section: sections[section].model_dump(mode="json", include=set(keys)) for section, keys in REMEMBERED.items()}
