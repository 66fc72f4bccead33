"""Tools for the tests, importable by path as users' tools are (tests.tool_fixtures:NAME)."""

import asyncio
import sys
import time

from langchain_core.tools import StructuredTool, tool


def shout(request: str) -> str:
    """Repeats the request in capital letters."""
    return request.upper()


def broken(request: str) -> str:
    """Always fails."""
    raise RuntimeError("the disk is on fire\nsecond line")


def hangs(request: str) -> str:
    """Never answers in time."""
    time.sleep(3600)
    return "too late"


async def hangs_async(request: str) -> str:
    """Never answers in time, asynchronously."""
    await asyncio.sleep(3600)
    return "too late"


def megabytes(request: str) -> str:
    """Answers with four megabytes."""
    return "x" * (4 * 1024 * 1024)


def not_text(request: str):
    """Answers with an object that is not text."""
    return object()


def exits(request: str) -> str:
    """Calls sys.exit."""
    sys.exit(3)


def undocumented(request: str) -> str:
    return request


@tool
def word_count(text: str) -> str:
    """Counts the words of a text."""
    return str(len(text.split()))


async def _reverse(text: str) -> str:
    return text[::-1]


reverse = StructuredTool.from_function(coroutine=_reverse, name="reverse", description="Reverses a text, letter by letter.")


def make_word_count():
    return word_count


NOT_A_FUNCTION = 42
