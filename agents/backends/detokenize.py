"""Incremental detokenization: text grows token by token without decoding the whole row at every step.

Byte-level BPE can split one character across tokens; text is released only once it no longer ends in the
replacement character, the same rule vLLM and text-generation-inference use.
"""

from __future__ import annotations


class IncrementalText:
    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it made stable (possibly empty)."""
        self.ids.append(token_id)
        decode = self._tokenizer.decode
        before = decode(self.ids[self._prefix : self._read])
        after = decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta


def first_stop(text: str, delta: str, stops: list[str]) -> str | None:
    """The stop string that the latest delta completed, looking only at the tail that could contain it."""
    for stop in stops:
        if stop and stop in text[-(len(delta) + len(stop)) :]:
            return stop
    return None
