"""The runtime's tunables, one pydantic model per concern; unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agents.coder import CoderSettings
from agents.requester import RequesterSettings
from agents.sandbox import SandboxLimits


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunLimits(Strict):
    max_calls: int = Field(4, ge=0, description="requests per question")
    max_total_tokens: int = Field(1536, ge=1, description="requester and inserted tokens per question, prompt excluded")


class AgentConfig(Strict):
    requester: RequesterSettings = Field(default_factory=RequesterSettings)
    coder: CoderSettings = Field(default_factory=CoderSettings)
    limits: RunLimits = Field(default_factory=RunLimits)
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits)
