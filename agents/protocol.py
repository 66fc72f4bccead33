"""The requester/coder protocol: the one place that knows its tags.

The requester writes reasoning, asks with <request>...</request>, reads <result>...</result>, and answers with
\\boxed{...}. The coder answers with one fenced Python block. Everything here reads model output, which is
untrusted: the parsers return what they could find and a list of problems, and never raise.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

REQUEST_OPEN = "<request>"
REQUEST_CLOSE = "</request>"
RESULT_OPEN = "<result>"
RESULT_CLOSE = "</result>"
BOXED = "\\boxed{"
REQUESTER_STOPS = [REQUEST_CLOSE]
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)

# What the parsers report about a segment. The first group breaks the protocol (the format reward's concern).
UNCLOSED_REQUEST = f"{REQUEST_OPEN} was never closed"
STRAY_CLOSE = f"{REQUEST_CLOSE} without {REQUEST_OPEN}"
NESTED_REQUESTS = "nested or repeated request tags; the innermost request was used"
SECOND_REQUEST = "a second request in the same segment was ignored"
EMPTY_REQUEST = "the request is empty"
UNCLOSED_BOX = "\\boxed{ was never closed"
EMPTY_ANSWER = "the boxed answer is empty"
TEXT_AFTER_ANSWER = "text after the answer was ignored"
NOTHING = "no request and no \\boxed{} answer"
FORMAT_VIOLATIONS = frozenset({UNCLOSED_REQUEST, STRAY_CLOSE, NESTED_REQUESTS, SECOND_REQUEST, EMPTY_REQUEST, UNCLOSED_BOX, EMPTY_ANSWER, TEXT_AFTER_ANSWER})


class RequesterTurn(BaseModel):
    """What one requester segment amounts to: a request to run, a final answer, or neither."""

    kind: Literal["request", "answer", "none"]
    request: str | None = None
    answer: str | None = None
    problems: list[str] = Field(default_factory=list)


def parse_requester_segment(text: str) -> RequesterTurn:
    """Read one segment the requester generated since the last inserted result (special tokens removed).

    A closed request wins over a boxed answer in the same segment: a model that boxes a tentative answer and then
    asks to check it is verifying, which the published work saw models learn. Generation stops at the closing tag, so
    text after it is at most the rest of one token.
    """
    close = text.find(REQUEST_CLOSE)
    if close >= 0:
        return _parse_request(text, close)
    problems: list[str] = []
    if REQUEST_OPEN in text:
        problems.append(UNCLOSED_REQUEST)
    span = _boxed_span(text)
    if span is None:
        problems.append(UNCLOSED_BOX if BOXED in text else NOTHING)
        return RequesterTurn(kind="none", problems=problems)
    answer = _boxed_content(text, span).strip()
    if text[span[1] :].strip(" \t\n."):
        problems.append(TEXT_AFTER_ANSWER)
    if not answer:
        return RequesterTurn(kind="none", problems=problems + [EMPTY_ANSWER])
    return RequesterTurn(kind="answer", answer=answer, problems=problems)


def _parse_request(text: str, close: int) -> RequesterTurn:
    problems: list[str] = []
    opening = text.rfind(REQUEST_OPEN, 0, close)
    if opening < 0:
        return RequesterTurn(kind="none", problems=[STRAY_CLOSE])
    if text.count(REQUEST_OPEN, 0, close) > 1:
        problems.append(NESTED_REQUESTS)
    if text.find(REQUEST_OPEN, close) >= 0:
        problems.append(SECOND_REQUEST)
    request = text[opening + len(REQUEST_OPEN) : close].strip()
    if not request:
        problems.append(EMPTY_REQUEST)
    return RequesterTurn(kind="request", request=request, problems=problems)


def extract_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...}, with nested braces balanced; None if there is none."""
    span = _boxed_span(text)
    return None if span is None else _boxed_content(text, span).strip()


def _boxed_span(text: str) -> tuple[int, int] | None:
    """(start of the content, end after the closing brace) of the last balanced \\boxed{...}."""
    start = text.rfind(BOXED)
    while start >= 0:
        depth, index = 1, start + len(BOXED)
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth == 0:
            return start + len(BOXED), index
        start = text.rfind(BOXED, 0, start)
    return None


def _boxed_content(text: str, span: tuple[int, int]) -> str:
    return text[span[0] : span[1] - 1]


def extract_code(text: str) -> str | None:
    """The coder's program: the first fenced block marked python (else the first fenced block); an unclosed fence
    runs to the end of the text. Returns None when there is no fence or the block is empty."""
    blocks = [(lang.lower(), body) for lang, body in FENCE.findall(text)]
    for lang, body in blocks:
        if lang in ("python", "py", "python3") and body.strip():
            return body.strip("\n")
    for _, body in blocks:
        if body.strip():
            return body.strip("\n")
    return None


def format_result(output: str | None, error: str | None) -> str:
    """The text inserted into the requester's trajectory after a request; tokenized once, when inserted."""
    body = error if error else (output.strip() if output and output.strip() else "(no output)")
    return f"\n{RESULT_OPEN}\n{body}\n{RESULT_CLOSE}\n"
