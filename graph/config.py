"""The runtime's tunables, one pydantic model per concern; unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agents.sandbox import SandboxLimits


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequesterSettings(Strict):
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_segment_tokens: int = Field(256, ge=1, description="tokens the requester may write between two results")


class CoderSettings(Strict):
    temperature: float = Field(0.0, ge=0.0)
    max_new_tokens: int = Field(192, ge=1)
    max_repairs: int = Field(2, ge=0, description="extra attempts after a program fails")
    show_question: bool = Field(False, description="give the coder the question as context, not only the request")


class RunLimits(Strict):
    max_calls: int = Field(4, ge=0, description="requests per question")
    max_total_tokens: int = Field(1536, ge=1, description="requester and inserted tokens per question, prompt excluded")


class AgentConfig(Strict):
    requester: RequesterSettings = Field(default_factory=RequesterSettings)
    coder: CoderSettings = Field(default_factory=CoderSettings)
    limits: RunLimits = Field(default_factory=RunLimits)
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits)
