"""duet's graph for LangGraph's server: `langgraph dev` (and LangGraph Platform) load `make_graph` from langgraph.json.

The server calls the factory for every run and every read of a thread, so the team (its models and sandbox) is built
once per server process and the compiled graph is reused; the server adds its own checkpointer. Settings come from
the environment, as a deployment sets them:

    DUET_REQUESTER   requester model spec (default: the embedded model)
    DUET_CODER       coder model spec (default: the embedded model; not loaded in the inline mode)
    DUET_MODE        request or inline (default: as the requester checkpoint was trained, else request)
    DUET_CONFIG      a YAML file of agent settings (limits, sandbox, sampling), as `duet ask --config` takes
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from pathlib import Path

from duet.configfile import load_config
from graph.build import Team
from graph.config import AgentConfig

log = logging.getLogger("duet")


@functools.cache
def team() -> Team:
    from agents.sandbox.isolation import detect_isolation

    config_file = os.environ.get("DUET_CONFIG")
    mode = os.environ.get("DUET_MODE")
    config = load_config(AgentConfig, Path(config_file) if config_file else None, {"requester.mode": mode} if mode else {})
    warning = detect_isolation().warning
    if warning:
        log.warning(warning)
    return Team(os.environ.get("DUET_REQUESTER", "default"), os.environ.get("DUET_CODER", "default"), config)


@functools.cache
def compiled_graph():
    return team().graph()


async def make_graph():
    """Async, with the loading in a worker thread: the server's event loop must never wait on disk or on weights."""
    return await asyncio.to_thread(compiled_graph)
