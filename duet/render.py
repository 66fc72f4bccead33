"""How a run looks in the terminal: reasoning streams as plain text, every other step gets a labelled panel, and a
run that ends without an answer says in one line why and what to try."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from agents.protocol import NOTHING

STYLES = {
    "request": ("request", "cyan"),
    "code": ("code", "magenta"),
    "output": ("output", "green"),
    "execution_error": ("execution error", "red"),
    "tool_error": ("tool error", "red"),
    "answer": ("answer", "bold green"),
    "error": ("error", "bold red"),
    "notice": ("notice", "yellow"),
}


def _try(mode: str) -> str:
    other = "--mode request (the coder writes the programs)" if mode == "inline" else "--mode inline (it writes the programs itself)"
    return f"try a trained requester (duet sft, duet train, then --requester runs/NAME/checkpoint-latest), {other}, or a bigger model (--requester Qwen/Qwen2.5-1.5B-Instruct)"


def explain(state, mode: str = "request") -> str | None:
    """One line on why a run ended without an answer and what to try, read off its final state (status, problems,
    calls); for an answer given without any request, that nothing computed it. None for an answer after a request."""
    asked = len(state.calls)
    noticed = [problem for problem in state.problems if problem != NOTHING]
    if state.status == "no_answer":
        after = f"after {asked} request{'s' if asked != 1 else ''}" if asked else "without asking for any computation"
        said = f" ({noticed[-1]})" if noticed else ""
        return f"no answer: the requester stopped {after} and wrote no \\boxed{{}} answer{said}; small untrained models often do; {_try(mode)}"
    if state.status == "limit":
        problem = state.problems[-1] if state.problems else "a limit"
        if problem.startswith("more than"):
            allow = "allow more with --max-calls N"
        elif problem == "token budget spent":
            allow = "allow more with limits.max_total_tokens in --config"
        else:
            allow = ("allow longer segments with requester.max_segment_tokens, or more tokens in all with "
                     "limits.max_total_tokens, in --config (a segment is cut at whichever ends first, or at the model's context)")
        return f"stopped at a limit: {problem}; {allow}, or, if it was going round in circles, {_try(mode)}"
    if state.status == "error":
        return "the run failed (the error is above), which says nothing about the model's answer; check the model specs, the server, or the sandbox with duet exec --info"
    if state.status == "answered" and not asked:
        return "answered from the requester's own reasoning, without a request: nothing was computed or checked"
    return None


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
            if event.get("tool") not in (None, "coder"):
                title = f"{title}: {event['tool']}"
            self.console.print(Panel(Text(text.rstrip() or "(empty)"), title=title, title_align="left", border_style=style))

    def finish(self, state, mode: str = "request") -> None:
        """After the run: the one-line explanation of how it ended, when it needs one."""
        if self._in_reasoning:
            self.console.out("")
            self._in_reasoning = False
        why = explain(state, mode)
        if why:
            self.console.print(Text(why, style="dim" if state.status == "answered" else "yellow"))
