"""Tool routing, measured side by side in one run: when a request names a tool the registry does not hold, how often
does each method pick the tool a careful solver would have used, and how long does a pick take?

`lexical` ranks the tool cards by BM25 word overlap with the request and the name it wrote; `hidden` embeds cards and
request with the requester's own hidden states (mean-pooled last layer) and takes the nearest, as AutoTool does.
The requests are the generators' own (the `request` a careful solver writes, in metadata), each sent under a name
that is not in the registry, over both the training tools and the two held out of training.

    python bench/tool_routing.py [--requester default] [--n 60]
"""

from __future__ import annotations

import asyncio
import time

import typer
from rich.console import Console
from rich.table import Table

from agents.models import load_backend, parse_spec
from agents.tools.registry import ToolSettings
from agents.tools.toolbox import Toolbox
from training.tool_questions import generate

REGISTRY = ["coder", "calculator", "units", "dates", "primes", "roman"]
WRONG_NAMES = {  # names a model might invent for each tool
    "coder": ["python", "program", "code"], "calculator": ["math", "arithmetic", "compute"],
    "units": ["converter", "unit_conversion", "measure"], "dates": ["calendar", "date_calculator", "days"],
    "primes": ["factorize", "factor", "prime_factors"], "roman": ["numerals", "roman_converter", "latin"],
}


async def accuracy(toolbox: Toolbox, cases: list[tuple[str, str, str]]) -> tuple[float, float, dict[str, float]]:
    right, per_tool, started = 0, {}, time.perf_counter()
    for name, request, expected in cases:
        tool, _ = await toolbox.resolve(name, request)
        right += tool.name == expected
        per_tool.setdefault(expected, []).append(tool.name == expected)
    seconds = (time.perf_counter() - started) / len(cases)
    return right / len(cases), seconds, {tool: sum(hits) / len(hits) for tool, hits in per_tool.items()}


def main(requester: str = "default", n: int = 60) -> None:
    rows = generate("tools", n, seed=7) + generate("unseen-tools", n // 2, seed=7)
    cases = [(WRONG_NAMES[r["metadata"]["tool"]][i % 3], r["metadata"]["request"], r["metadata"]["tool"]) for i, r in enumerate(rows)]
    backend = load_backend(parse_spec(requester))
    table = Table(title=f"routing {len(cases)} requests under unknown names among {len(REGISTRY)} tools (requester {requester})")
    for column in ("method", "right", "ms per pick", *REGISTRY):
        table.add_column(column)
    for method in ("lexical", "hidden"):
        toolbox = Toolbox(ToolSettings(registry=REGISTRY, routing=method), backend)
        share, seconds, per_tool = asyncio.run(accuracy(toolbox, cases))
        table.add_row(method, f"{share:.0%}", f"{seconds * 1000:.1f}", *(f"{per_tool.get(tool, 0):.0%}" for tool in REGISTRY))
    Console(width=120).print(table)


if __name__ == "__main__":
    typer.run(main)
