"""duet: a requester model that asks a coder model for exact computation."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.console import Console
from typer.core import TyperGroup

from agents.errors import DuetError
from agents.protocol import MODES, Mode
from agents.sandbox import SandboxLimits
from graph.config import RunLimits


click = getattr(typer.core, "_click", None) or importlib.import_module("click")  # typer 0.29 carries its own click


class OneLineUsageErrors(TyperGroup):
    """A bad option (`--mode bogus`, `--n 0`, a missing `--out`) is reported like every other input error: one line
    naming it and where to read more, exit 1. (Click would print a boxed usage block and exit 2.)"""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        kwargs.setdefault("prog_name", "duet")  # also under python -m duet and accelerate launch -m duet
        from training.progress import quiet_library_bars

        quiet_library_bars()  # into a file or a pipe, no tqdm bars of the libraries (their carriage returns)
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # returns the exit code of a typer.Exit
        except click.exceptions.NoArgsIsHelpError as error:  # `duet` alone: the help, as before
            if error.format_message().strip():
                error.show()
            sys.exit(error.exit_code)
        except click.exceptions.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "duet"
            message = re.sub(r"^Value error, ", "", error.format_message().strip()).rstrip(".")
            typer.echo(f"error: {message.replace(': Value error, ', ': ')}; see {where} --help", err=True)
            sys.exit(1)
        except click.exceptions.ClickException as error:
            typer.echo(f"error: {error.format_message().strip()}", err=True)
            sys.exit(error.exit_code)
        except click.exceptions.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineUsageErrors, add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

RequesterOpt = Annotated[str, typer.Option("--requester", "-r", help="Model spec of the requester (see README: model specs).")]
CoderOpt = Annotated[str, typer.Option("--coder", "-c", help="Model spec of the coder: default, PATH, ORG/NAME, openai:URL#NAME, vllm:PATH.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file of AgentConfig settings.")]
MaxCallsOpt = Annotated[
    Optional[int],
    typer.Option("--max-calls", help=f"Requests allowed per question. Default: {RunLimits.model_fields['max_calls'].default} (limits.max_calls in --config), or as the requester's checkpoint was trained."),
]
ToolsOpt = Annotated[
    Optional[Path],
    typer.Option("--tools", help="YAML file of the tool registry (a list of tools, or the tools: settings); replaces the config's and the checkpoint's."),
]
ModeOpt = Annotated[
    Optional[Mode],
    typer.Option("--mode",
                 help="request: ask the coder in plain language; inline: the requester writes the code itself (no coder). Default: as the checkpoint was trained, else request."),
]


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def warn_about_isolation() -> None:
    """Model-written programs are about to run: say so in one line when the sandbox is weaker than namespaces (once,
    from the first process of a distributed run). On a system without the sandbox this raises its DuetError."""
    import os

    from agents.sandbox.isolation import detect_isolation

    warning = detect_isolation().warning
    if warning and os.environ.get("RANK", "0") == "0":
        err_console.print(f"warning: {warning}", style="yellow", highlight=False)


def agent_config(config: Path | None, max_calls: int | None, mode: str | None = None, tools: Path | None = None):
    """The agent settings of a command that runs the graph (so it also warns about a weak sandbox)."""
    from duet.configfile import load_config, load_yaml
    from graph.config import AgentConfig

    registry = None if tools is None else load_yaml(tools, "tool registry")
    given = {("limits.max_calls", "--max-calls"): max_calls, ("requester.mode", "--mode"): mode, ("tools", f"--tools {tools}"): registry}
    overrides = {key: value for (key, _), value in given.items() if value is not None}
    flags = {key: flag if key == "tools" else f"{flag} {getattr(value, 'value', value)}" for (key, flag), value in given.items() if value is not None}
    settings = load_config(AgentConfig, config, overrides, flags=flags)
    warn_about_isolation()
    return settings


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    requester: RequesterOpt = "default",
    coder: CoderOpt = "default",
    max_calls: MaxCallsOpt = None,
    mode: ModeOpt = None,
    config: ConfigOpt = None,
    tools: ToolsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the live view.")] = False,
) -> None:
    """Answer one question, showing reasoning, requests, code, output and the answer as they happen."""
    try:
        settings = agent_config(config, max_calls, mode, tools)
        with console.status("loading models", spinner="dots") if not as_json else nullcontext():
            from graph.build import Team

            team = Team(requester, coder, settings)
        state = asyncio.run(_ask(team, question, as_json))
    except DuetError as error:
        fail(str(error))
    if as_json:
        sys.stdout.write(json.dumps(summary(state), ensure_ascii=False) + "\n")


async def _ask(team, question: str, as_json: bool):
    from duet.render import EventPrinter
    from graph.run import run_question, stream_question

    try:
        graph = team.graph()
        if as_json:
            return await run_question(graph, question, team.config)
        printer = EventPrinter(console)
        async for event in stream_question(graph, question, team.config):
            if event["event"] == "done":
                printer.finish(event["state"], team.requester.mode)  # why it ended without an answer, in one line
                return event["state"]
            printer.show(event)
    finally:
        await team.aclose()


def summary(state) -> dict:
    """The --json record: stable keys for scripts."""
    return {
        "question": state.question,
        "answer": state.answer,
        "status": state.status,
        "error": state.error,
        "calls": [
            {
                "request": c.request,
                "tool": c.tool,
                "code": c.code,
                "output": c.output,
                "error": c.error,
                "attempts": [{"reply": a.reply, "code": a.code, "error": a.error} for a in c.attempts],
            }
            for c in state.calls
        ],
        "problems": state.problems,
        "tokens": {"prompt": state.trajectory.count("prompt"), "requester": state.trajectory.count("requester"), "inserted": state.trajectory.count("inserted")},
    }


@app.command()
def chat(
    thread: Annotated[Optional[str], typer.Option("--thread", "-t", help="Conversation name; an existing one is resumed.")] = None,
    requester: RequesterOpt = "default",
    coder: CoderOpt = "default",
    max_calls: MaxCallsOpt = None,
    mode: ModeOpt = None,
    config: ConfigOpt = None,
    tools: ToolsOpt = None,
) -> None:
    """Talk with the agent. Commands: /reset, /coder SPEC, /quit. Conversations are saved and resumable."""
    from duet.chat_session import run_chat

    try:
        settings = agent_config(config, max_calls, mode, tools)
        asyncio.run(run_chat(console, thread, requester, coder, settings))
    except DuetError as error:
        fail(str(error))


@app.command("exec")
def exec_(
    file: Annotated[Optional[Path], typer.Argument(help="Python file to run in the sandbox.")] = None,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", help=f"Wall-clock limit in seconds. Default: {SandboxLimits.model_fields['timeout_s'].default:g} (sandbox.timeout_s).")] = None,
    memory: Annotated[Optional[int], typer.Option(
        "--memory", help=f"Address-space limit in MB. Default: {SandboxLimits.model_fields['memory_mb'].default} (sandbox.memory_mb).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ExecutionResult as JSON.")] = False,
    info: Annotated[bool, typer.Option("--info", help="Show which isolation this machine gives the sandbox.")] = False,
) -> None:
    """Run one program through the same sandbox the executor uses."""
    from agents.sandbox import Sandbox
    from agents.sandbox.isolation import detect_isolation
    from duet.configfile import load_config

    try:
        isolation = detect_isolation()
    except DuetError as error:
        fail(str(error))
    if info:
        if as_json:
            sys.stdout.write(isolation.model_dump_json() + "\n")
        else:
            for name, value in isolation.describe():
                console.print(f"[bold]{name}:[/] {value}", highlight=False)
        return
    if file is None:
        fail("give a Python file to run, or --info")
    try:
        code = file.read_text(encoding="utf-8", errors="replace")
        given = {"timeout_s": timeout, "memory_mb": memory, "concurrency": 1}
        limits = load_config(SandboxLimits, None, {key: value for key, value in given.items() if value is not None},
                             flags={"timeout_s": f"--timeout {timeout:g}" if timeout is not None else "--timeout", "memory_mb": f"--memory {memory}"})
    except OSError as error:
        fail(f"cannot read {file}: {error.strerror}; give a readable Python file")
    except DuetError as error:
        fail(str(error))
    result = Sandbox(limits, isolation).run(code)
    if as_json:
        sys.stdout.write(result.model_dump_json() + "\n")
        return
    sys.stdout.write(result.stdout)
    if result.error:
        err_console.print(f"[red]{result.error}[/]", highlight=False)
    err_console.print(f"[dim]exit {result.exit_code}, {result.duration_s:.3f} s{', truncated' if result.truncated else ''}[/]", highlight=False)


data_app = typer.Typer(no_args_is_help=True, help="Make and convert question/answer datasets.")
app.add_typer(data_app, name="data")


@data_app.command("make")
def data_make(
    name: Annotated[str, typer.Argument(help="big-value, big-value-steps, big-value-words, tools, unseen-tools, gsm-symbolic, arithmetic, knights-knaves or countdown.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of questions.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same questions.")] = 0,
    split: Annotated[
        Optional[str],
        typer.Option("--split", help="big-value, big-value-steps and big-value-words: train, validation or test, each from its own random stream; big-value's "
                                     "held-out split asks only the two templates the others never use. Unset: every template, from the seed alone."),
    ] = None,
) -> None:
    """Generate a dataset offline, seeded and reproducible, as JSONL (id, question, answer, source, metadata)."""
    from training.data import generate

    rows = written(lambda: generate(name, n, seed, split), out)
    console.print(f"wrote {len(rows)} {name} questions to {out}", highlight=False)


def written(make, out: Path) -> list[dict]:
    """The rows `make()` returns, written to `out`; bad input or an unwritable path is a one-line error."""
    from training.data import write_jsonl

    try:
        rows = make()
        write_jsonl(rows, out)
    except DuetError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror}; choose a writable path")
    return rows


ModeChoice = Enum("ModeChoice", {name: name for name in MODES}, type=str)


@data_app.command("demonstrations")
def data_demonstrations(
    data: Annotated[list[Path], typer.Argument(help="JSONL files of big-value, big-value-steps or big-value-words rows (their metadata.steps), e.g. train splits.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL traces to write, for a recipe's traces.file or traces.demonstrations.")],
    mode: Annotated[ModeChoice, typer.Option("--mode", help="request: one request per step; inline: one program per step.")] = ModeChoice.request,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Only the first N rows of each file.")] = None,
    cite: Annotated[bool, typer.Option("--cite", help='Put the clause of the question each step comes from before it: From "It ships out 5 kilograms", I need the difference.')] = False,
) -> None:
    """Write cold-start demonstrations from generated rows' worked steps, each result as a right program prints it."""
    from training.data import load_source
    from training.demonstrations import demonstration

    traces = written(lambda: [demonstration(row, mode.value, cite) for path in data for row in load_source(path).rows[:n]], out)
    console.print(f"wrote {len(traces)} {mode.value}-mode demonstrations to {out}", highlight=False)


@data_app.command("coder-pairs")
def data_coder_pairs(
    data: Annotated[list[Path], typer.Argument(help="JSONL files of big-value, big-value-steps or big-value-words rows (their metadata.steps), e.g. train splits.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL pairs to write, for a coder recipe's traces.file (role: coder).")],
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Only the first N rows of each file.")] = None,
) -> None:
    """Write a coder's training pairs from generated rows' worked steps: each step's request and its exact program."""
    from training.data import load_source
    from training.demonstrations import coder_pairs

    pairs = written(lambda: [pair for path in data for row in load_source(path).rows[:n] for pair in coder_pairs(row)], out)
    console.print(f"wrote {len(pairs)} request -> program pairs to {out}", highlight=False)


AnswerFormatChoice = Enum("AnswerFormatChoice", {name: name for name in ("auto", "gsm8k", "boxed", "raw")}, type=str)


@data_app.command("convert")
def data_convert(
    source: Annotated[str, typer.Argument(help="A .jsonl/.json/.parquet/.csv file, a dataset folder or a Hugging Face dataset id.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
    question_field: Annotated[str, typer.Option("--question-field", help="Column that holds the question (MATH: problem).")] = "question",
    answer_field: Annotated[str, typer.Option("--answer-field", help="Column that holds the answer or worked solution (MATH: solution).")] = "answer",
    name: Annotated[Optional[str], typer.Option("--name", help="Config of a multi-config dataset, datasets.load_dataset's name: main or socratic for openai/gsm8k.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of a hub dataset or folder.")] = "train",
    answer_format: Annotated[
        AnswerFormatChoice,
        typer.Option("--answer-format",
                     help="How the gold answer is taken from the answer column: gsm8k, the number after the last #### line; boxed, "
                          "the last \\boxed{}; raw, as written; auto, gsm8k or boxed when most answers are written so. The full "
                          "text goes to metadata.solution."),
    ] = AnswerFormatChoice.auto,
) -> None:
    """Load any supported source with a field mapping and write duet's JSONL; rows without an answer are counted."""
    from training.data import FieldMap, load_rows, write_jsonl

    try:
        loaded = load_rows(source, FieldMap(question=question_field, answer=answer_field), split, name, answer_format.value)
        write_jsonl(loaded.rows, out)
    except DuetError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror}; choose a writable path")
    console.print(loaded.summary(out), highlight=False)


@data_app.command("filter")
def data_filter(
    data: Annotated[Path, typer.Argument(help="duet JSONL dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Filtered, easy-to-hard JSONL to write.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Samples per question.")] = 4,
    temperature: Annotated[float, typer.Option("--temperature", min=0.01, help="Requester sampling temperature.")] = 1.0,
    requester: RequesterOpt = "default",
    coder: CoderOpt = "default",
    mode: ModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sample the requester k times per question; drop what it always solves; order the rest easy to hard. Each
    question's pass rate is kept as it finishes (DATA.pass_rates.jsonl): the same command again resumes."""
    from graph.build import Team
    from training.data import load_rows, write_jsonl
    from training.difficulty import filter_and_order, graph_answerer, measure_pass_rates, measurement_log, save_pass_rates
    from training.progress import Progress

    try:
        settings = agent_config(config, None, mode)
        settings.requester.temperature = temperature
        rows = load_rows(str(data)).rows
        team = Team(requester, coder, settings)
    except DuetError as error:
        fail(str(error))
    log = measurement_log(data)
    measured_with = {"requester": requester, "coder": coder, "agent": team.config.model_dump(mode="json")}

    async def measure(progress):
        try:
            return await measure_pass_rates(rows, graph_answerer(team.graph(), team.config), k, log=log, settings=measured_with, on_progress=progress.update)
        finally:
            await team.aclose()

    if not os.access(log.parent, os.W_OK):
        fail(f"data filter keeps each pass rate beside the data, and {log.parent} is not a folder it can write; "
             "convert the dataset to a local file first (duet data convert SOURCE --out data/x.jsonl)")
    with Progress("filter", unit="question", console=err_console) as progress:
        try:
            rates = asyncio.run(measure(progress))
        except DuetError as error:
            fail(str(error))
    kept = filter_and_order(rows, rates)
    write_jsonl(kept, out)
    saved = save_pass_rates(data, rates, k)
    console.print(f"kept {len(kept)} of {len(rows)} questions (dropped those always solved) in {out}; pass rates in {saved}", highlight=False)
    if len(rates) < len(rows):
        err_console.print(f"{len(rows) - len(rates)} questions met a backend error and were not measured (left out); "
                          "run the same command again to measure them", style="yellow", highlight=False)


def set_option(example: str):
    return typer.Option("--set", help=f"Override a recipe key: --set {example} (repeatable).")


def run_recipe(config_cls, config: Path, overrides: list[str] | None, mode: str | None, run, made) -> None:
    """Shared by train and sft: load the YAML recipe with its --set overrides (--mode is agent.requester.mode), warn
    about a weak sandbox, run, and turn every user-facing failure into one line. `made(settings, checkpoint)` says
    what was made and how to use it."""
    from duet.configfile import load_config, parse_overrides
    from training.preflight import check_recipe

    try:
        given = parse_overrides(overrides or [])
        flags = {pair.partition("=")[0].strip(): f"--set {pair.strip()}" for pair in overrides or []}
        if mode:
            given["agent.requester.mode"], flags["agent.requester.mode"] = mode, f"--mode {mode}"
        settings = load_config(config_cls, config, given, flags=flags)
        check_recipe(settings, config)
        warn_about_isolation()
        final = run(settings)
    except DuetError as error:
        fail(str(error))
    except KeyboardInterrupt:
        typer.echo("interrupted; a GRPO run continues with --resume from its last checkpoint", err=True)
        raise typer.Exit(130) from None
    console.print(f"done; {made(settings, final)}", highlight=False)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML recipe of a GRPO run (see configs/).")],
    overrides: Annotated[Optional[list[str]], set_option("grpo.beta=0.01")] = None,
    mode: ModeOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint-latest.")] = False,
) -> None:
    """Train the requester with GRPO through the graph. Under `accelerate launch`, data-parallel."""
    from training.config import GRPORunConfig

    def run(settings):
        from training.trainer import train as run_training

        return run_training(settings, resume=resume)

    run_recipe(GRPORunConfig, config, overrides, mode, run, lambda _, final: f"the trained requester is {final} (duet ask --requester {final})")


@app.command()
def sft(
    config: Annotated[Path, typer.Argument(help="YAML recipe of a cold-start SFT run (see configs/).")],
    overrides: Annotated[Optional[list[str]], set_option("sft.learning_rate=2e-5")] = None,
    mode: ModeOpt = None,
) -> None:
    """Cold start: supervised fine-tuning on protocol traces, with the loss on the requester's own tokens only (role:
    coder fine-tunes the coder on request -> program pairs)."""
    from training.config import SFTRunConfig

    def run(settings):
        from training.sft import run_sft

        return run_sft(settings)

    def made(settings, final) -> str:
        if settings.role == "coder":
            return f"the fine-tuned coder is {final} (duet eval --coder {final})"
        return f"the fine-tuned requester is {final} (duet ask --requester {final})"

    run_recipe(SFTRunConfig, config, overrides, mode, run, made)


eval_app = typer.Typer(help="Evaluate on datasets with and without the coder; compare reports.")
app.add_typer(eval_app, name="eval")


@eval_app.callback(invoke_without_command=True)
def evaluate(
    ctx: typer.Context,
    data: Annotated[
        Optional[list[str]],
        typer.Option("--data", help="A dataset (repeat for several): a .jsonl/.json/.parquet/.csv file, a dataset folder, a hub id, or a "
                                    "mapping like a recipe's data.train entry: '{path: openai/gsm8k, name: main, split: test}'."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder; an existing one is resumed.")] = None,
    requester: RequesterOpt = "default",
    coder: CoderOpt = "default",
    modes: Annotated[str, typer.Option("--modes", help="Comma-separated, of coder (request mode), inline, alone.")] = "coder,alone",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="First N questions of each dataset.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Questions in flight at once.")] = 16,
    config: ConfigOpt = None,
    tools: ToolsOpt = None,
    name_tool: Annotated[bool, typer.Option("--name-tool", help="The oracle run: each question names the tool its row names (metadata.tool).")] = False,
) -> None:
    """Run the graph over datasets; write records.jsonl, report.md, report.json and accuracy.png to --out."""
    if ctx.invoked_subcommand is not None:
        return
    from agents.tools.registry import load_tools
    from training.data import parse_source
    from training.evaluate import EvalConfig, evaluate as run_evaluation, reproduce_command, write_report

    if not data or out is None:
        fail("give --data FILE (one or more) and --out FOLDER")
    try:
        eval_config = EvalConfig(
            data=[parse_source(value, "--data") for value in data], requester=requester, coder=coder, modes=[m.strip() for m in modes.split(",") if m.strip()],
            limit=limit, concurrency=concurrency, name_tool=name_tool, agent=agent_config(config, None, tools=tools),
        )
        load_tools(eval_config.agent.tools)  # a tool that cannot be imported fails before any question starts
    except DuetError as error:
        fail(str(error))
    except ValueError:
        fail(f"--modes {modes}: give a comma-separated list of coder, inline, alone")
    from training.progress import Progress

    with Progress("eval", unit="question", console=err_console) as progress:
        try:
            summaries, settings = asyncio.run(run_evaluation(eval_config, out, progress.update))
        except DuetError as error:
            fail(str(error))
    write_report(summaries, out, reproduce_command(settings, out), settings.agent)
    sys.stdout.write((out / "report.md").read_text())


@eval_app.command("compare")
def eval_compare(first: Path, second: Path) -> None:
    """Show two reports side by side."""
    from training.evaluate import compare_table

    try:
        sys.stdout.write(compare_table(first, second) + "\n")
    except DuetError as error:
        fail(str(error))


@app.command("curves")
def curves(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (a recipe's output_dir, holding metrics.jsonl), or metrics.jsonl files.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    label: Annotated[Optional[list[str]], typer.Option("--label", help="A name per run, in order (default: the folder's name).")] = None,
) -> None:
    """Draw several runs' training curves on shared panels (two recipes, or the request and inline modes)."""
    from training.run_log import CURVES, TOOL_CURVES, plot_runs, read_history

    if label and len(label) != len(runs):
        fail(f"{len(label)} --label for {len(runs)} runs; give one per run, or none")
    try:
        histories = {name: read_history(run) for name, run in zip(label or [run.name if run.is_dir() else run.parent.name for run in runs], runs)}
        plot_runs(histories, out, CURVES + TOOL_CURVES)
    except DuetError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror}; choose a writable path")
    console.print(f"drew {len(histories)} runs to {out}", highlight=False)


if __name__ == "__main__":
    app()
