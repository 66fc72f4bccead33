"""Calling a function or LangChain tool so that nothing it does can crash or hang the graph.

The tool is the user's code, trusted; its input is the requester's request, untrusted. Whatever happens (it raises,
even SystemExit; it hangs; it returns megabytes or something that is not text) the call ends within the tool's time
limit with an output or an error for the requester to read. A synchronous tool runs in a daemon thread of its own:
one that never returns is left behind when its time is up (Python cannot stop a thread) and cannot keep the process
from exiting, which the event loop's default executor would. An asynchronous tool is awaited and cancelled at its
time limit.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

from pydantic import BaseModel

from agents.errors import first_line
from agents.tools.builtin import ToolInputError
from agents.tools.registry import Tool


class ToolExited(Exception):
    """A tool called sys.exit: asyncio would let SystemExit out of the event loop, so it travels as this instead."""


class ToolOutcome(BaseModel):
    output: str | None = None
    error: str | None = None


async def call_tool(tool: Tool, request: str, max_output_chars: int) -> ToolOutcome:
    try:
        value = await asyncio.wait_for(_invoke(tool, request), tool.timeout_s)
    except TimeoutError:
        return ToolOutcome(error=f"the {tool.name} tool did not answer within {tool.timeout_s:g} s")
    except ToolInputError as error:
        return ToolOutcome(error=str(error))
    except ToolExited as error:
        return ToolOutcome(error=f"the {tool.name} tool failed: {error}")
    except Exception as error:  # noqa: BLE001 - a tool's failure is the requester's to read
        return ToolOutcome(error=f"the {tool.name} tool failed: {type(error).__name__}: {first_line(error)}")
    text = _as_text(value)
    if text is None:
        return ToolOutcome(error=f"the {tool.name} tool returned a {type(value).__name__}, not text")
    if len(text) > max_output_chars:
        text = f"{text[:max_output_chars]}\n... ({len(text) - max_output_chars} more characters cut)"
    return ToolOutcome(output=text)


async def _invoke(tool: Tool, request: str) -> Any:
    if tool.kind == "langchain":
        return await _invoke_langchain(tool.run, request)
    if inspect.iscoroutinefunction(tool.run):
        try:
            return await tool.run(request)
        except SystemExit as error:
            raise ToolExited(f"SystemExit: {error}") from None
    return await in_daemon_thread(tool.run, request)


async def _invoke_langchain(tool, request: str) -> Any:
    """A tool with one argument gets the request as it; an async tool (MCP adapters' tools are async only) is awaited,
    a sync one runs in a daemon thread."""
    from langchain_core.tools import BaseTool

    fields = list(tool.get_input_schema().model_json_schema().get("properties", {}))
    payload = {fields[0]: request} if len(fields) == 1 else request
    if getattr(tool, "coroutine", None) is not None or type(tool)._arun is not BaseTool._arun:
        return await tool.ainvoke(payload)
    return await in_daemon_thread(tool.invoke, payload)


async def in_daemon_thread(function, *args) -> Any:
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(value=None, error: BaseException | None = None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(value)

    def work() -> None:
        try:
            outcome = (function(*args), None)
        except SystemExit as error:
            outcome = (None, ToolExited(f"SystemExit: {error}"))
        except BaseException as error:  # noqa: BLE001 - whatever it raised, its caller must hear of it
            outcome = (None, error)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed while a hung tool was left behind; nobody waits for it any more
            pass

    threading.Thread(target=work, name="duet-tool", daemon=True).start()
    return await future


def _as_text(value: Any) -> str | None:
    """Text, or what a LangChain tool returns around it (a ToolMessage, content blocks)."""
    if isinstance(value, str):
        return value
    content = getattr(value, "content", value)
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(block, (str, dict)) for block in content):
        return "\n".join(block if isinstance(block, str) else str(block.get("text", block)) for block in content)
    if isinstance(value, (int, float)):
        return str(value)
    return None
