"""How a run looks in the terminal: reasoning streams as plain text, every other step gets a labelled panel."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

STYLES = {
    "request": ("request", "cyan"),
    "code": ("code", "magenta"),
    "output": ("output", "green"),
    "execution_error": ("execution error", "red"),
    "answer": ("answer", "bold green"),
    "error": ("error", "bold red"),
    "notice": ("notice", "yellow"),
}


class EventPrinter:
    def __init__(self, console: Console):
        self.console = console
        self._in_reasoning = False

    def show(self, event: dict) -> None:
        kind, text = event["event"], event.get("text") or ""
        if kind == "reasoning":
            if not self._in_reasoning:
                self.console.print(Text("reasoning", style="dim"))
                self._in_reasoning = True
            self.console.out(text, end="", highlight=False)
            return
        if self._in_reasoning:
            self.console.out("")
            self._in_reasoning = False
        if kind == "status":
            self.console.print(Text(f"status: {text}", style="dim"))
        elif kind == "result":
            return
        elif kind == "code":
            title = "code" if event.get("attempt", 1) == 1 else f"code (repair {event['attempt'] - 1})"
            self.console.print(Panel(Syntax(text, "python", theme="ansi_dark"), title=title, title_align="left", border_style="magenta"))
        else:
            title, style = STYLES.get(kind, (kind, "white"))
            self.console.print(Panel(Text(text.rstrip() or "(empty)"), title=title, title_align="left", border_style=style))
