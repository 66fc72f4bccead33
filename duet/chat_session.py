"""The interactive chat: each question runs the graph on a thread whose state a SQLite checkpointer keeps."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path

import aiosqlite
import platformdirs
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from rich.console import Console

from agents.errors import DuetError
from duet.render import EventPrinter
from graph.build import Team
from graph.config import AgentConfig
from graph.run import run_config, stream_question
from graph.state import AgentState, checkpoint_serializer

HELP = "/reset clears this thread's history, /coder SPEC swaps the coder, /quit leaves (Ctrl-D too)."


def chats_path() -> Path:
    """Conversations are user data, not cache: DUET_DATA_DIR overrides the platform's user data dir."""
    root = Path(os.environ.get("DUET_DATA_DIR") or platformdirs.user_data_dir("duet"))
    root.mkdir(parents=True, exist_ok=True)
    return root / "chats.sqlite"


async def run_chat(console: Console, thread: str | None, requester: str, coder: str, config: AgentConfig) -> None:
    thread = thread or datetime.now().strftime("chat-%Y%m%d-%H%M%S")
    with console.status("loading models", spinner="dots"):
        team = Team(requester, coder, config)
    config = team.config  # with what the requester's checkpoint remembers (its limits among them)
    async with aiosqlite.connect(str(chats_path())) as connection:
        saver = AsyncSqliteSaver(connection, serde=checkpoint_serializer())
        graph = team.graph(saver)
        thread_config = run_config(config, thread)
        previous = await graph.aget_state(thread_config)
        history = AgentState.model_validate(previous.values).history if previous.values else []
        console.print(f"[bold]thread[/] {thread} ({len(history)} earlier exchanges; resume with: duet chat --thread {thread})")
        for exchange in history:
            console.print(f"[dim]you>[/] {exchange.question}\n[dim]duet>[/] {exchange.answer}")
        console.print(f"[dim]{HELP}[/]")
        printer = EventPrinter(console)
        try:
            while True:
                try:
                    line = (await asyncio.to_thread(console.input, "[bold]you> ")).strip()
                except (EOFError, KeyboardInterrupt):
                    break
                if not line:
                    continue
                if line in ("/quit", "/exit"):
                    break
                if line == "/reset":
                    if (await graph.aget_state(thread_config)).values:
                        await graph.aupdate_state(thread_config, {"history": []}, as_node="finish")
                    console.print("[dim]history cleared[/]")
                elif line.startswith("/coder"):
                    spec = line.removeprefix("/coder").strip()
                    try:
                        with console.status(f"loading coder {spec}", spinner="dots"):
                            team.swap_coder(spec)
                    except DuetError as error:
                        console.print(f"[red]error:[/] {error}")
                        continue
                    graph = team.graph(saver)
                    console.print(f"[dim]coder is now {spec}[/]")
                elif line.startswith("/"):
                    console.print(f"[dim]unknown command {line.split()[0]}. {HELP}[/]")
                else:
                    async for event in stream_question(graph, line, config, thread):
                        if event["event"] == "done":
                            printer.finish(event["state"], team.requester.mode)
                        else:
                            printer.show(event)
        finally:
            await team.aclose()
