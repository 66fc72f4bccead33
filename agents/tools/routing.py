"""Which tool a request meant when it names one the registry does not hold: the tool whose description is nearest.

AutoTool (Princeton) anchors tool selection in the model's own hidden space: descriptions and the request are embedded
with the requester's hidden states and the nearest description wins, so a tool added after training is reachable by
its description alone. `hidden` does that (mean-pooled last-layer states, cosine similarity); `lexical` ranks the
descriptions by BM25 word overlap with the request and the name it wrote, and needs no model.
bench/tool_routing.py measures the two side by side on requests for tools the requester never saw.
"""

from __future__ import annotations

import math
import re

from agents.backends.base import Backend
from agents.errors import DuetError
from agents.tools.registry import Routing, Tool

_TERM = re.compile(r"[a-z]+|[0-9]+|[+*/^]")  # not -: dates are written with it


def words(text: str) -> list[str]:
    """What BM25 matches on: lowercase words, numbers and arithmetic operators, plus each word's character trigrams
    (so factorize meets factorises, and km/h meets km), so that a terse request such as `48213 * 9123` or
    `5 miles in km` still overlaps the card that describes it."""
    terms = _TERM.findall(text.lower())
    grams = [f"#{word[i:i + 3]}" for word in terms if word.isalpha() and len(word) > 3 for i in range(len(word) - 2)]
    return terms + grams


def card_text(tool: Tool) -> str:
    return f"{tool.name}: {tool.description}"


class Router:
    def __init__(self, tools: list[Tool], method: Routing, backend: Backend | None = None):
        self.tools, self.method, self.backend = tools, method, backend
        if method == "lexical":
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([words(card_text(tool)) for tool in tools])

    async def nearest(self, request: str, name: str | None = None) -> Tool:
        query = f"{name or ''} {request}"
        if self.method == "lexical":
            scores = list(self._bm25.get_scores(words(query)))
        else:
            scores = await self._similarities(query)
        return self.tools[max(range(len(self.tools)), key=lambda index: (scores[index], -index))]

    async def _similarities(self, query: str) -> list[float]:
        """Embedded afresh each time: in training the requester's weights, and so its hidden space, change every step
        (and an unknown name is rare enough that a cache would save little)."""
        *cards, vector = await self.backend.embed([*(card_text(tool) for tool in self.tools), query])
        return [_cosine(vector, card) for card in cards]


def make_router(tools: list[Tool], method: Routing, backend: Backend | None) -> Router:
    if method == "hidden" and (backend is None or type(backend).embed is Backend.embed):
        name = backend.name if backend is not None else "this requester"
        raise DuetError(f"tools.routing: hidden needs the requester's hidden states, which {name} does not expose; set tools.routing: lexical")
    return Router(tools, method, backend)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
