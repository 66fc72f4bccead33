"""Time from starting `duet ask` to its first streamed reasoning token, with the embedded model already cached.

Measured side by side in one run with the floor that no program built on the same libraries can beat: starting an
interpreter that imports what duet needs before its first token (torch, transformers' auto classes, langgraph).

    python bench/ask_first_token.py [--runs 3]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from agents.models import embedded_model_dir

QUESTION = "What is 48213 * 9123?"


def first_token_seconds() -> float:
    """Seconds until the first character after the 'reasoning' label reaches stdout."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "duet.cli", "ask", QUESTION], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    seen = ""
    while True:
        char = process.stdout.read(1)
        if not char:
            raise RuntimeError("duet ask ended before streaming any reasoning")
        seen += char
        if seen.endswith("reasoning\n"):
            process.stdout.read(1)
            elapsed = time.perf_counter() - start
            process.kill()
            process.wait()
            return elapsed


def import_floor_seconds() -> float:
    start = time.perf_counter()
    imports = "import torch, langgraph.graph; from transformers import AutoModelForCausalLM, AutoTokenizer"
    subprocess.run([sys.executable, "-c", imports], check=True)
    return time.perf_counter() - start


def main(runs: int = 3) -> None:
    embedded_model_dir()  # cached before timing, as the goal states
    first = [first_token_seconds() for _ in range(runs)]
    floor = [import_floor_seconds() for _ in range(runs)]
    table = Table(title=f"duet ask start to first streamed token ({runs} runs, model cached)")
    for column in ("measure", "median", "min", "max"):
        table.add_column(column)
    for name, values in (("duet ask -> first reasoning token", first), ("importing torch, transformers, langgraph (floor)", floor)):
        table.add_row(name, f"{statistics.median(values):.2f} s", f"{min(values):.2f} s", f"{max(values):.2f} s")
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
