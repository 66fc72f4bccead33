"""The requester role: builds its prompt and writes until a request closes, the answer ends, or the budget runs out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Backend, Generation, GenerationRequest, SamplingParams, TextCallback
from agents.errors import DuetError
from agents.protocol import Mode, requester_stops
from agents.tokenizing import encode_text
from prompts import load_examples, load_text


class RequesterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_segment_tokens: int = Field(256, ge=1, description="tokens the requester may write between two results; unset: as the checkpoint was trained, else 256")
    few_shot: bool | None = Field(None, description="show the worked examples; unset: as the checkpoint was trained, else yes")
    mode: Mode | None = Field(
        None, description="request: ask the coder in plain language; inline: write the program itself. Unset: as the checkpoint was trained, else request"
    )

    def filled(self) -> RequesterSettings:
        """With few_shot and mode, where still unset (no checkpoint remembered them: graph.build.as_trained), at
        their defaults: the worked examples shown, the request mode."""
        return self.model_copy(update={"few_shot": self.few_shot is not False, "mode": self.mode or "request"})


class Requester:
    def __init__(self, backend: Backend, settings: RequesterSettings | None = None, tool_cards: str | None = None):
        """`tool_cards`: the registry's cards (agents/tools/toolbox.py), shown after the system prompt in the request
        mode; None for the coder alone."""
        if backend.tokenizer is None:
            raise DuetError(f"the requester needs token ids, and {backend.name} has no tokenizer; use a local model or a vLLM server whose model folder is local")
        self.backend = backend
        self.settings = (settings or RequesterSettings()).filled()
        self.mode: Mode = self.settings.mode
        self.tool_cards = tool_cards

    def in_mode(self, mode: Mode) -> Requester:
        """The same model and settings writing in another mode (an evaluation comparing modes loads it once)."""
        return self if mode == self.mode else Requester(self.backend, self.settings.model_copy(update={"mode": mode}), self.tool_cards)

    def with_tool_cards(self, tool_cards: str | None) -> Requester:
        """The same model and settings with the cards of a registry (the graph gives its requester its own toolbox's)."""
        return self if tool_cards == self.tool_cards else Requester(self.backend, self.settings, tool_cards)

    def messages(self, question: str, history: list[tuple[str, str]] = ()) -> list[dict[str, str]]:
        return requester_messages(question, history, few_shot=self.settings.few_shot, mode=self.mode, tool_cards=self.tool_cards)

    def prompt_ids(self, question: str, history: list[tuple[str, str]] = (), reserve: int = 0) -> tuple[list[int], int]:
        """The prompt, and how many of the oldest exchanges were left out so that it plus `reserve` tokens of
        writing fit the model's context: a long chat must never grow into a backend error."""
        history = list(history)
        for dropped in range(len(history) + 1):
            ids = self.backend.encode_chat(self.messages(question, history[dropped:]))
            if self.room(ids) >= reserve:
                break
        return ids, dropped

    def room(self, context_ids: list[int]) -> int | float:
        """Tokens the model can still write after `context_ids` before its context is full."""
        window = self.backend.context_window
        return float("inf") if window is None else window - len(context_ids)

    def encode_inserted(self, text: str) -> list[int]:
        """Tokenize text the requester did not write (a result) exactly once, when it enters the trajectory, as text:
        a program that prints a control-token string cannot end the requester's turn."""
        return encode_text(self.backend.tokenizer, text)

    def visible_text(self, token_ids: list[int]) -> str:
        """What the parsers read: the segment without special tokens such as end-of-turn."""
        return self.backend.tokenizer.decode(token_ids, skip_special_tokens=True)

    async def write(self, context_ids: list[int], budget: int, on_text: TextCallback | None = None, seed: int | None = None) -> Generation:
        params = SamplingParams(
            max_new_tokens=max(1, min(self.settings.max_segment_tokens, budget)),
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            stop=requester_stops(self.mode),
            seed=seed,
        )
        shown = None if on_text is None else lambda text: on_text(self._without_special_tokens(text))
        [generation] = await self.backend.generate([GenerationRequest(context_ids, params, shown)])
        return generation

    def _without_special_tokens(self, text: str) -> str:
        for token in self.backend.tokenizer.all_special_tokens:
            text = text.replace(token, "")
        return text


PROMPTS: dict[Mode, str] = {"request": "requester", "inline": "requester_inline"}


def requester_messages(
    question: str, history: list[tuple[str, str]] = (), few_shot: bool = True, mode: Mode = "request", tool_cards: str | None = None
) -> list[dict[str, str]]:
    """System prompt (with the tool cards, in the request mode), few-shot exchanges, earlier exchanges of this chat,
    then the question."""
    system = load_text(PROMPTS[mode])
    if tool_cards and mode == "request":
        system = f"{system}\n{tool_cards}"
    messages = [{"role": "system", "content": system}]
    for example in load_examples(f"{PROMPTS[mode]}_examples") if few_shot else ():
        messages += [{"role": "user", "content": example["question"]}, {"role": "assistant", "content": example["answer"]}]
    for asked, response in history:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": response}]
    return [*messages, {"role": "user", "content": question}]
