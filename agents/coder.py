"""The coder role: turns a plain-language request into one Python program, and repairs it from the executor's error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Backend, SamplingParams
from agents.protocol import extract_code
from prompts import load_examples, load_text


class CoderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0)
    max_new_tokens: int = Field(192, ge=1)
    max_repairs: int = Field(2, ge=0, description="extra attempts after a program fails")
    show_question: bool = Field(False, description="give the coder the question as context, not only the request")


class Coder:
    def __init__(self, backend: Backend, settings: CoderSettings | None = None):
        self.backend = backend
        self.settings = settings or CoderSettings()

    def messages(self, request: str, question: str | None, failures: list[tuple[str, str]]) -> list[dict[str, str]]:
        """Few-shot pairs, the request, then each failed reply as the coder wrote it, followed by what went wrong:
        the executor's error when the reply held a program, a reminder of the format when it held none."""
        messages = [{"role": "system", "content": load_text("coder")}]
        for example in load_examples("coder_examples"):
            messages += [{"role": "user", "content": example["request"]}, {"role": "assistant", "content": fenced(example["code"])}]
        asked = f"{request}\n(The problem being solved: {question})" if self.settings.show_question and question else request
        messages.append({"role": "user", "content": asked})
        for reply, error in failures:
            feedback = load_text("coder_repair").format(error=error) if extract_code(reply) else load_text("coder_no_code")
            messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": feedback}]
        return messages

    async def write(self, request: str, question: str | None = None, failures: list[tuple[str, str]] = (), seed: int | None = None) -> str:
        params = SamplingParams(max_new_tokens=self.settings.max_new_tokens, temperature=self.settings.temperature, seed=seed)
        return await self.backend.chat(self.messages(request, question, list(failures)), params)


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"
