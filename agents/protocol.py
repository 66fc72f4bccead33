"""The requester/coder protocol: the one place that knows its tags.

The requester writes reasoning and asks for computation in one of two modes: `request` (the default) writes a plain
request between <request> tags for a tool (by default the coder, which turns it into a program; `<request
tool="units">` names another tool of the registry); `inline` writes the program itself, a fenced
Python block between <code> tags. Either way it reads the program's output in <result>...</result> and answers with
\\boxed{...}. The coder answers with one fenced Python block. Everything here reads model output, which is untrusted:
the parsers return what they could find and a list of problems, and never raise.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, Field

Mode = Literal["request", "inline"]
MODES: tuple[Mode, ...] = get_args(Mode)
REQUEST_OPEN = "<request>"
REQUEST_CLOSE = "</request>"
CODE_OPEN = "<code>"
CODE_CLOSE = "</code>"
TAGS: dict[Mode, tuple[str, str]] = {"request": (REQUEST_OPEN, REQUEST_CLOSE), "inline": (CODE_OPEN, CODE_CLOSE)}
RESULT_OPEN = "<result>"
RESULT_CLOSE = "</result>"
BOXED = "\\boxed{"
# an opening tag: <request>, or <request tool="NAME"> naming a tool of the registry; <code> has no attributes
OPENINGS: dict[Mode, re.Pattern] = {"request": re.compile(r"<request(?P<attributes>\s[^<>]*)?>"), "inline": re.compile(re.escape(CODE_OPEN))}
TOOL_ATTRIBUTE = re.compile(r"""^\s*tool\s*=\s*(?:"(?P<double>[^"]*)"|'(?P<single>[^']*)'|(?P<bare>[^\s"'=]+))\s*$""")
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def requester_stops(mode: Mode) -> list[str]:
    """Generation stops when the tool call closes, so the program runs before the requester goes on."""
    return [TAGS[mode][1]]


def tag_problems(mode: Mode) -> dict[str, str]:
    """What the parsers report about a tool call in this mode, by name."""
    opening, close = TAGS[mode]
    what = "request" if mode == "request" else "code block"
    return {
        "unclosed": f"{opening} was never closed",
        "stray": f"{close} without {opening}",
        "nested": f"nested or repeated {opening} tags; the innermost {what} was used",
        "second": f"a second {what} in the same segment was ignored",
        "empty": f"the {what} is empty",
        "attributes": f"{opening[:-1]} ...> holds something other than tool=\"NAME\"; it was ignored",
    }


# What the parsers report about a segment. The first group breaks the protocol (the format reward's concern).
UNCLOSED_REQUEST, STRAY_CLOSE, NESTED_REQUESTS, SECOND_REQUEST, EMPTY_REQUEST, BAD_ATTRIBUTES = tag_problems("request").values()
UNCLOSED_BOX = "\\boxed{ was never closed"
EMPTY_ANSWER = "the boxed answer is empty"
TEXT_AFTER_ANSWER = "text after the answer was ignored"
SEVERAL_ANSWERS = "more than one \\boxed{} answer; the last was judged"
NOTHING = "no tool call and no \\boxed{} answer"
FORMAT_VIOLATIONS = frozenset(
    {*(p for mode in MODES for p in tag_problems(mode).values()), UNCLOSED_BOX, EMPTY_ANSWER, TEXT_AFTER_ANSWER, SEVERAL_ANSWERS}
)


class RequesterTurn(BaseModel):
    """What one requester segment amounts to: a tool call to serve (a request for the coder, or in the inline mode
    the requester's own program), a final answer, or neither."""

    kind: Literal["request", "code", "answer", "none"]
    request: str | None = Field(None, description="the tool call as written between its tags")
    tool: str | None = Field(None, description="the tool named in <request tool=\"NAME\">; None: the default tool")
    code: str | None = Field(None, description="inline mode: the program in the code block")
    answer: str | None = None
    problems: list[str] = Field(default_factory=list)


def parse_requester_segment(text: str, mode: Mode = "request") -> RequesterTurn:
    """Read one segment the requester generated since the last inserted result (special tokens removed).

    A closed tool call wins over a boxed answer in the same segment: a model that boxes a tentative answer and then
    asks to check it is verifying, which the published work saw models learn. Generation stops at the closing tag, so
    text after it is at most the rest of one token.
    """
    close = text.find(TAGS[mode][1])
    if close >= 0:
        return _parse_call(text, close, mode)
    problems: list[str] = []
    if OPENINGS[mode].search(text):
        problems.append(tag_problems(mode)["unclosed"])
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


def _parse_call(text: str, close: int, mode: Mode) -> RequesterTurn:
    named = tag_problems(mode)
    problems: list[str] = []
    openings = list(OPENINGS[mode].finditer(text, 0, close))
    if not openings:
        return RequesterTurn(kind="none", problems=[named["stray"]])
    if len(openings) > 1:
        problems.append(named["nested"])
    if OPENINGS[mode].search(text, close):
        problems.append(named["second"])
    opening = openings[-1]
    body = text[opening.end() : close].strip()
    if mode == "request":
        tool, bad = _tool_named(opening.groupdict().get("attributes"))
        problems += [named["attributes"]] if bad else []
        return RequesterTurn(kind="request", request=body, tool=tool, problems=problems + ([] if body else [named["empty"]]))
    code = inline_code(body)
    return RequesterTurn(kind="code", request=body, code=code, problems=problems + ([] if code else [named["empty"]]))


def _tool_named(attributes: str | None) -> tuple[str | None, bool]:
    """The tool an opening tag names, and whether it held anything else (then no name is taken from it)."""
    if attributes is None or not attributes.strip():
        return None, False
    match = TOOL_ATTRIBUTE.match(attributes)
    if not match:
        return None, True
    name = (match["double"] if match["double"] is not None else match["single"] if match["single"] is not None else match["bare"]).strip()
    return name or None, False


def inline_code(body: str) -> str | None:
    """The program in an inline code block: its fenced block, or the bare text when the model wrote no fence."""
    if "```" in body:
        return extract_code(body)
    return body.strip("\n") if body.strip() else None


def count_boxed(text: str, mode: Mode = "request") -> int:
    """How many \\boxed{ a text opens outside its tool calls (a request may mention one, a program may print one): a
    well-formed trajectory has exactly one, its answer."""
    close = re.escape(TAGS[mode][1])
    return re.sub(rf"(?:{OPENINGS[mode].pattern}).*?(?:{close}|\Z)", "", text, flags=re.DOTALL).count(BOXED)


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


def request_tag(tool: str | None = None) -> str:
    """The opening tag as the requester writes it (the prompt's tool cards show it)."""
    return REQUEST_OPEN if tool is None else f'<request tool="{tool}">'


def format_result(output: str | None, error: str | None) -> str:
    """The text inserted into the requester's trajectory after a request; tokenized once, when inserted."""
    body = error if error else (output.strip() if output and output.strip() else "(no output)")
    return f"\n{RESULT_OPEN}\n{body}\n{RESULT_CLOSE}\n"
