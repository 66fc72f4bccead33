"""The backend interface every model runner implements.

Token level (`generate`) is what the requester needs for token-exact trajectories; text level (`chat`) is what the
coder needs, and the only thing some servers offer. Backends with a tokenizer get `chat` for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.tokenizing import encode_chat


class SamplingParams(BaseModel):
    """Per-request sampling; temperature 0 means greedy. A `seed` makes this request's draws depend on nothing but
    the seed and the logits, so a concurrent run reproduces whatever else shares its batch."""

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = Field(None, ge=0)


class Generation(BaseModel):
    """What one row produced. `token_ids` include the token that completed a stop string and the EOS token, so the
    ids are exactly what the model emitted. `logprobs[i]` is log_softmax(logits / temperature)[token_ids[i]] (logits
    alone when greedy), taken before top-p filtering: the same quantity on every backend, and what the trainer
    recomputes from the same weights, so the two can be compared and used as the old policy."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: Literal["stop", "eos", "length"]
    stop_string: str | None = None


TextCallback = Callable[[str], None]


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    on_text: TextCallback | None = None


class Backend(ABC):
    """A model that generates for a batch of prompts. Concurrent callers may be gathered into one batch."""

    name: str
    tokenizer: Any | None = None
    context_window: int | None = None  # tokens of prompt plus generation the model accepts; None when unknown

    @abstractmethod
    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    def encode_chat(self, messages: list[dict[str, str]], continue_assistant: bool = False) -> list[int]:
        """Token ids of a chat, ending with an open assistant turn (or continuing the last assistant message); message
        contents never become control tokens (agents/tokenizing.py)."""
        if self.tokenizer is None:
            raise TypeError(f"{self.name} has no tokenizer, so it cannot build token-level prompts")
        return encode_chat(self.tokenizer, messages, continue_assistant)

    async def chat(self, messages: list[dict[str, str]], params: SamplingParams) -> str:
        [generation] = await self.generate([GenerationRequest(self.encode_chat(messages), params)])
        return self.tokenizer.decode(generation.token_ids, skip_special_tokens=True)

    async def embed(self, texts: list[str]) -> list[list[float]] | None:
        """One vector per text from the model's own hidden states, or None when the backend cannot see them (a served
        model): tool routing then falls back to word overlap."""
        return None

    async def aclose(self) -> None:
        """Release threads, sockets or engines; the default holds nothing."""
