"""A backend that replays scripted replies through the real tokenizer, to drive the graph down exact paths.

It is a real implementation of the Backend interface (stop strings, finish reasons, token ids), with the model's
choices replaced by a script; the graph cannot tell the difference.
"""

from __future__ import annotations

from agents.backends.base import Backend, Generation, GenerationRequest, SamplingParams


class ScriptedBackend(Backend):
    def __init__(self, tokenizer, replies: list[str], chat_replies: list[str] | None = None, fail_after: int | None = None):
        self.name = "scripted"
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.chat_replies = list(chat_replies or [])
        self.prompts: list[list[int]] = []
        self.chats: list[list[dict]] = []
        self.fail_after = fail_after

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        results = []
        for request in requests:
            if self.fail_after is not None and len(self.prompts) >= self.fail_after:
                raise ConnectionError("scripted backend went away")
            self.prompts.append(list(request.prompt_ids))
            results.append(self._reply(self.replies.pop(0), request.params))
        return results

    def _reply(self, text: str, params: SamplingParams) -> Generation:
        reason, stop = "eos", None
        cut = min(((text.find(s) + len(s), s) for s in params.stop if s in text), default=None)
        if cut is not None:
            text, stop, reason = text[: cut[0]], cut[1], "stop"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > params.max_new_tokens:
            ids, reason, stop = ids[: params.max_new_tokens], "length", None
        elif reason == "eos":
            ids = [*ids, self.tokenizer.eos_token_id]
        return Generation(token_ids=ids, logprobs=[-0.5] * len(ids), text=self.tokenizer.decode(ids), finish_reason=reason, stop_string=stop)

    async def chat(self, messages, params) -> str:
        """Replies in order; an exception in the script is raised instead, as a failing server would."""
        self.chats.append(messages)
        reply = self.chat_replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply
