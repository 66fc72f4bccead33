"""Evaluation: the same graph as `duet ask`, over datasets, with and without the coder, resumable, with a report.

Each finished question is appended to `records.jsonl` at once, so a killed run restarts where it stopped. Metrics are
computed from those records alone (`summarize`), which keeps them testable on hand-made records.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.errors import DuetError
from graph.config import AgentConfig
from graph.state import AgentState
from training.data import DataSource
from training.answers import Verdict
from training.rewards import acheck_answer, format_reward

Mode = Literal["coder", "inline", "alone"]
MODE_NOTES = {
    "coder": "coder: the requester asks in plain language and the coder writes the program (the request mode).",
    "inline": "inline: the requester writes the program itself, with no coder (the inline mode).",
    "alone": "alone: the request mode's prompt and protocol, but every request is answered with "
    "'no helper is available in this run; continue without it' instead of a program's output.",
}
MODE_LABELS = {"coder": "with coder", "inline": "inline code", "alone": "requester alone"}


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[DataSource] = Field(description="files, folders or hub ids, each with its config name, split and columns")
    requester: str = "default"
    coder: str = "default"
    modes: list[Mode] = Field(default_factory=lambda: ["coder", "alone"])
    limit: int | None = Field(None, ge=1, description="first N questions of each file")
    concurrency: int = Field(16, ge=1, description="questions in flight at once")
    name_tool: bool = Field(False, description="the oracle run: each question ends by naming the tool its row names (metadata.tool)")
    agent: AgentConfig = Field(default_factory=AgentConfig)


class Record(BaseModel):
    dataset: str
    id: str
    mode: Mode
    question: str
    gold: str
    answer: str | None
    correct: bool
    verdict_reason: str | None = Field(None, description="why the answer was judged wrong")
    status: str
    well_formed: bool | None = Field(None, description="the format reward was 1 (unknown in records written before duet kept it)")
    requests: int
    attempts: int
    failed_executions: int
    executions: int
    calls_with_failure: int
    calls_recovered: int
    tokens: int
    seconds: float
    call_tools: list[str] = Field(default_factory=list, description="the tool that served each call")
    call_errors: list[bool] = Field(default_factory=list, description="whether each call's result was an error")
    unknown_tool_names: int = Field(0, description="calls that named a tool the registry does not hold (routed by description)")
    expected_tool: str | None = Field(None, description="the tool the row names (metadata.tool)")
    template: str | None = Field(None, description="the generator's template of the row (metadata.template)")


def record_of(dataset: str, row: dict, mode: Mode, state: AgentState, seconds: float, verdict: Verdict) -> Record:
    executed = [a for call in state.calls for a in call.attempts if a.result is not None]
    troubled = [call for call in state.calls if any(a.failed for a in call.attempts if a.result is not None)]
    return Record(
        dataset=dataset, id=row["id"], mode=mode, question=row["question"], gold=row["answer"], answer=state.answer,
        correct=verdict.correct, verdict_reason=verdict.reason, status=state.status, well_formed=format_reward(row, state) == 1.0,
        requests=len(state.calls),
        attempts=sum(len(call.attempts) for call in state.calls),
        failed_executions=sum(a.failed for a in executed), executions=len(executed),
        calls_with_failure=len(troubled), calls_recovered=sum(not call.attempts[-1].failed for call in troubled),
        tokens=state.trajectory.count("requester", "inserted"), seconds=round(seconds, 3),
        call_tools=[call.tool for call in state.calls], call_errors=[call.error is not None for call in state.calls],
        unknown_tool_names=sum(c.asked_tool is not None and c.asked_tool.lower() != c.tool.lower() for c in state.calls),
        expected_tool=(row.get("metadata") or {}).get("tool"), template=_template_of(row),
    )


def _template_of(row: dict) -> str | None:
    template = (row.get("metadata") or {}).get("template")
    return template if isinstance(template, str) else None


class Summary(BaseModel):
    dataset: str
    mode: Mode
    questions: int
    accuracy: float
    format_rate: float | None = Field(description="share of well-formed runs (format reward 1); None when a record predates it")
    answered_rate: float = Field(description="share of runs that ended with a boxed answer (status answered)")
    error_rate: float = Field(0.0, description="share of runs a backend failure ended (retried on resume)")
    asked_rate: float = Field(description="share of questions with at least one request")
    requests_per_question: float
    executor_error_rate: float = Field(description="failed executions / executions")
    recovery_rate: float | None = Field(description="calls whose failed program was repaired / calls with a failure")
    right_after_failure: float | None = Field(None, description="runs answered right despite a failed program / runs with a failed program "
                                                                "(the inline mode's recovery: a new program after an error)")
    tokens_per_question: float
    seconds_per_question: float
    tool_choice_rate: float | None = Field(None, description="runs whose every call went to the row's tool / runs that asked, on rows naming a tool")
    calls_by_tool: dict[str, float] = Field(default_factory=dict, description="calls per question, by tool")
    tool_error_rates: dict[str, float] = Field(default_factory=dict, description="calls answered with an error / calls, by tool")
    unknown_tool_rate: float = Field(0.0, description="calls that named a tool the registry does not hold / calls")
    by_template: dict[str, tuple[int, int]] = Field(default_factory=dict, description="right answers and questions, by the rows' generator template")


def summarize(records: list[Record]) -> list[Summary]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.dataset, record.mode), []).append(record)
    summaries = []
    for (dataset, mode), group in sorted(groups.items()):
        n = len(group)
        executions = sum(r.executions for r in group)
        troubled = sum(r.calls_with_failure for r in group)
        failed = [r for r in group if r.failed_executions]
        summaries.append(Summary(
            dataset=dataset, mode=mode, questions=n,
            accuracy=sum(r.correct for r in group) / n,
            format_rate=None if any(r.well_formed is None for r in group) else sum(r.well_formed for r in group) / n,
            answered_rate=sum(r.status == "answered" for r in group) / n,
            error_rate=sum(r.status == "error" for r in group) / n,
            asked_rate=sum(r.requests > 0 for r in group) / n,
            requests_per_question=sum(r.requests for r in group) / n,
            executor_error_rate=sum(r.failed_executions for r in group) / executions if executions else 0.0,
            recovery_rate=sum(r.calls_recovered for r in group) / troubled if troubled else None,
            right_after_failure=sum(r.correct for r in failed) / len(failed) if failed else None,
            tokens_per_question=sum(r.tokens for r in group) / n,
            seconds_per_question=sum(r.seconds for r in group) / n,
            by_template=by_template(group),
            **tool_use(group),
        ))
    return summaries


def by_template(group: list[Record]) -> dict[str, tuple[int, int]]:
    templates = sorted({r.template for r in group if r.template})
    return {t: (sum(r.correct for r in group if r.template == t), sum(r.template == t for r in group)) for t in templates}


def tool_use(group: list[Record]) -> dict:
    """Which tools a group of runs called, how often they failed, and whether they chose the row's tool."""
    calls = [(tool, failed) for r in group for tool, failed in zip(r.call_tools, r.call_errors)]
    tools = sorted({tool for tool, _ in calls})
    chose = [all(tool == r.expected_tool for tool in r.call_tools) for r in group if r.expected_tool and r.call_tools]
    return {
        "tool_choice_rate": sum(chose) / len(chose) if chose else None,
        "calls_by_tool": {tool: sum(t == tool for t, _ in calls) / len(group) for tool in tools},
        "tool_error_rates": {tool: sum(f for t, f in calls if t == tool) / sum(t == tool for t, _ in calls) for tool in tools},
        "unknown_tool_rate": sum(r.unknown_tool_names for r in group) / len(calls) if calls else 0.0,
    }


def read_records(path: Path) -> list[Record]:
    """Records written so far, the latest of each (dataset, question, mode): a question that failed with a backend
    error and ran again on resume counts once. A line cut short by a killed run is dropped; its question runs again."""
    if not path.is_file():
        return []
    latest: dict[tuple[str, str, str], Record] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = Record.model_validate_json(line)
        except ValueError:
            continue
        latest[(record.dataset, record.id, record.mode)] = record
    return list(latest.values())


def drop_partial_line(path: Path) -> None:
    """A run killed mid-write leaves a line without its newline; cut it so appended records start on a line of
    their own (its question runs again)."""
    if not path.is_file():
        return
    content = path.read_bytes()
    if content and not content.endswith(b"\n"):
        path.write_bytes(content[: content.rfind(b"\n") + 1])


class EvalSettings(BaseModel):
    """What an evaluation folder's records were made with (settings.json). A resume must use the same; datasets and
    modes may be added, each dataset under a key that is unique and never changes."""

    requester: str
    coder: str
    agent: AgentConfig
    limit: int | None
    name_tool: bool = False
    datasets: dict[str, str] = Field(
        default_factory=dict,
        description="key in the records -> the file's absolute path, a hub id, or the source as a YAML mapping when it has a config name, split or mapping",
    )
    modes: list[Mode] = Field(default_factory=list)


def settled(config: EvalConfig, out: Path) -> EvalSettings:
    """The folder's settings with this run's datasets and modes added; refuses settings that differ from the folder's."""
    path = out / "settings.json"
    wanted = EvalSettings(requester=config.requester, coder=config.coder, agent=config.agent, limit=config.limit, name_tool=config.name_tool)
    stored = EvalSettings.model_validate_json(path.read_text()) if path.is_file() else wanted
    for field in ("requester", "coder", "agent", "limit", "name_tool"):
        if getattr(stored, field) != getattr(wanted, field):
            raise DuetError(
                f"{out} holds records made with another {field} ({_shown(getattr(stored, field))}, not {_shown(getattr(wanted, field))}); "
                "resume with the same settings, or write to another --out"
            )
    keys = dict(stored.datasets)
    for data in config.data:
        identity = source_identity(data)
        if identity not in keys.values():
            keys[dataset_key(data, taken=keys)] = identity
    modes = stored.modes + [m for m in config.modes if m not in stored.modes]
    return stored.model_copy(update={"datasets": keys, "modes": modes})


def source_identity(source: DataSource) -> str:
    """What settings.json remembers of a dataset: a local file or folder by its absolute path, a hub id as written;
    with a config name, split or column mapping, the whole source as a one-line YAML mapping (as --data takes it)."""
    import yaml

    local = Path(source.path).expanduser()
    path = str(local.resolve()) if local.exists() or source.is_file else source.path
    if source.is_plain:
        return path
    given = {"path": path, **source.model_dump(exclude_defaults=True, exclude={"path"})}
    return yaml.safe_dump(given, default_flow_style=True, sort_keys=False, width=10**6).strip()


def dataset_key(data: DataSource | Path, taken: dict[str, str]) -> str:
    """The file's name, or as many parent folders as make it unique (gsm, then a/gsm): two files with one name
    never share records. A hub id is named the same way (gsm8k, then openai/gsm8k), with its config name and a split
    other than train after it (gsm8k-main-test)."""
    source = DataSource.model_validate(data)
    local = Path(source.path).expanduser()
    if local.exists() or source.is_file:
        parts = (local.resolve().with_suffix("") if source.is_file else local.resolve()).parts
    else:
        parts = tuple(source.path.split("/"))
    tail = "".join(f"-{value}" for value in (source.name, None if source.is_file or source.split == "train" else source.split) if value)
    for depth in range(1, len(parts) + 1):
        key = "/".join(parts[-depth:]) + tail
        if key not in taken:
            return key
    raise DuetError(f"cannot name {source.path} uniquely among {', '.join(taken)}")


def _shown(value) -> str:
    return "different agent settings" if isinstance(value, AgentConfig) else repr(value)


async def evaluate(config: EvalConfig, out: Path, on_progress=None, team=None) -> tuple[list[Summary], EvalSettings]:
    """Run what `out/records.jsonl` lacks for this run's datasets and modes (and what ended in a backend error),
    append each result as it finishes, and summarize every record of the folder."""
    from graph.build import Team, as_trained
    from graph.run import gather_or_cancel, run_question

    out.mkdir(parents=True, exist_ok=True)
    # what the requester's checkpoint remembers (its limits among them), unless given: settings.json and agent.yaml
    # hold the settings the records were made under, so the report names them and its command repeats them
    config = config.model_copy(update={"agent": as_trained(config.agent, config.requester)})
    settings = settled(config, out)
    records_path = out / "records.jsonl"
    drop_partial_line(records_path)
    done = {(r.dataset, r.id, r.mode) for r in read_records(records_path) if r.status != "error"}
    keys = {path: key for key, path in settings.datasets.items()}
    datasets = {keys[source_identity(source)]: source.load().rows[: config.limit] for source in config.data}
    wanted = [(name, row, mode) for mode in config.modes for name, rows in datasets.items() for row in rows]
    pending = [(name, row, mode) for name, row, mode in wanted if (name, row["id"], mode) not in done]
    if on_progress:
        on_progress(total=len(wanted), completed=len(wanted) - len(pending))
    (out / "settings.json").write_text(settings.model_dump_json(indent=1))
    if pending:
        team = team or Team(config.requester, config.coder, config.agent, load_coder="coder" in config.modes)
        graphs = {mode: team.graph(with_coder=mode == "coder", mode="inline" if mode == "inline" else "request") for mode in config.modes}
        slots = asyncio.Semaphore(config.concurrency)
        with records_path.open("a", encoding="utf-8") as sink:

            async def one(name: str, row: dict, mode: Mode) -> None:
                async with slots:
                    started = time.perf_counter()
                    state = await run_question(graphs[mode], asked(row, config.name_tool), config.agent)
                    seconds = time.perf_counter() - started
                record = record_of(name, row, mode, state, seconds, await acheck_answer(row, state.answer))
                sink.write(record.model_dump_json() + "\n")
                sink.flush()
                if on_progress:
                    on_progress(advance=1)

            try:
                await gather_or_cancel(one(*item) for item in pending)
            finally:
                await team.aclose()
    return summarize(read_records(records_path)), settings


def asked(row: dict, name_tool: bool) -> str:
    """The question as the requester reads it; in the oracle run, with the tool its row names."""
    tool = (row.get("metadata") or {}).get("tool") if name_tool else None
    return f"{row['question']}\n(Ask the tool named {tool}: <request tool=\"{tool}\">.)" if tool else row["question"]


def reproduce_command(settings: EvalSettings, out: Path) -> str:
    """The command that makes these records again: the agent settings are written beside them (agent.yaml)."""
    import yaml

    (out / "agent.yaml").write_text(yaml.safe_dump(settings.agent.model_dump(mode="json"), sort_keys=False))
    import shlex

    data = [shlex.quote(source) if source.startswith("{") else _here(source) if Path(source).exists() else source for source in settings.datasets.values()]
    parts = ["duet eval", *(f"--data {source}" for source in data), f"--out {_here(out)}",
             f"--requester {settings.requester}", f"--coder {settings.coder}", f"--modes {','.join(settings.modes)}",
             f"--config {_here(out / 'agent.yaml')}"]
    if settings.limit:
        parts.append(f"--limit {settings.limit}")
    if settings.name_tool:
        parts.append("--name-tool")
    return " ".join(parts)


def _here(path) -> str:
    """A path as the user would type it from here: relative when it lies below the current folder."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def write_report(summaries: list[Summary], out: Path, command: str, agent: AgentConfig | None = None) -> None:
    """report.json (for `duet eval compare`), report.md (the table, what each mode means and, given the agent
    settings the records were made under, the limits), charts as PNG."""
    limits = None if agent is None else {**agent.limits.model_dump(), "max_segment_tokens": agent.requester.max_segment_tokens}
    (out / "report.json").write_text(json.dumps({"command": command, "limits": limits, "summaries": [s.model_dump() for s in summaries]}, indent=2))
    charts = [("accuracy", "accuracy", 1.0), ("requests_per_question", "requests per question", None)]
    images = "\n".join(f"![{label}]({field}.png)" for field, label, _ in charts)
    notes = "\n".join(f"- {MODE_NOTES[mode]}" for mode in MODE_NOTES if any(s.mode == mode for s in summaries))
    ran_under = "" if limits is None else (
        f"Limits: at most {limits['max_calls']} requests and {limits['max_total_tokens']} tokens per question (the requester's and the "
        f"results', prompt excluded), {limits['max_segment_tokens']} tokens per requester segment.\n\n")
    lines = [f"# Evaluation\n\nReproduce with:\n\n    {command}\n\n{ran_under}Modes:\n{notes}\n", markdown_table(summaries), "", tools_table(summaries), templates_table(summaries), images, ""]
    (out / "report.md").write_text("\n".join(lines))
    for field, label, top in charts:
        plot_metric(summaries, field, label, top, out / f"{field}.png")


COLUMNS = [
    ("dataset", "dataset", str), ("mode", "mode", str), ("n", "questions", str), ("accuracy", "accuracy", "{:.1%}"),
    ("format", "format_rate", "{:.1%}"), ("answered", "answered_rate", "{:.1%}"), ("errors", "error_rate", "{:.1%}"), ("asked", "asked_rate", "{:.1%}"), ("requests/q", "requests_per_question", "{:.2f}"),
    ("exec errors", "executor_error_rate", "{:.1%}"), ("recovered", "recovery_rate", "{:.1%}"), ("right after a failure", "right_after_failure", "{:.1%}"),
    ("tokens/q", "tokens_per_question", "{:.0f}"), ("s/q", "seconds_per_question", "{:.1f}"),
]


def markdown_table(summaries: list[Summary]) -> str:
    def cell(summary: Summary, field: str, style) -> str:
        value = getattr(summary, field)
        return "n/a" if value is None else style(value) if callable(style) else style.format(value)

    header = "| " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = ["| " + " | ".join(cell(s, field, style) for _, field, style in COLUMNS) + " |" for s in summaries]
    return "\n".join([header, rule, *rows])


def tools_table(summaries: list[Summary]) -> str:
    """Per tool: calls per question and the share answered with an error; and the tool-selection accuracy. Empty
    when only the coder was called and no row names a tool."""
    tools = sorted({tool for s in summaries for tool in s.calls_by_tool})
    if tools in ([], ["coder"]) and all(s.tool_choice_rate is None for s in summaries):
        return ""
    header = "| dataset | mode | chose the row's tool | unknown names | " + " | ".join(f"{tool} calls/q (errors)" for tool in tools) + " |"
    rule = "|" + "---|" * (4 + len(tools))
    rows = []
    for s in summaries:
        chose = "n/a" if s.tool_choice_rate is None else f"{s.tool_choice_rate:.1%}"
        cells = [f"{s.calls_by_tool[t]:.2f} ({s.tool_error_rates[t]:.0%})" if t in s.calls_by_tool else "0" for t in tools]
        rows.append(f"| {s.dataset} | {s.mode} | {chose} | {s.unknown_tool_rate:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(["## Tools\n", header, rule, *rows, ""])


def templates_table(summaries: list[Summary]) -> str:
    """Right answers out of questions per generator template (big-value's, for instance), one column per dataset and
    mode; empty when no row names a template."""
    shown = [s for s in summaries if s.by_template]
    if not shown:
        return ""
    templates = sorted({t for s in shown for t in s.by_template})
    header = "| template | " + " | ".join(f"{s.dataset} ({s.mode})" for s in shown) + " |"
    rule = "|" + "---|" * (1 + len(shown))
    rows = ["| " + t + " | " + " | ".join("{} of {}".format(*s.by_template[t]) if t in s.by_template else "" for s in shown) + " |" for t in templates]
    return "\n".join(["## By template\n", header, rule, *rows, ""])


def plot_metric(summaries: list[Summary], field: str, label: str, top: float | None, path: Path) -> None:
    """One bar per dataset and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({s.dataset for s in summaries})
    modes = sorted({s.mode for s in summaries})
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(datasets), 3.2))
    width = 0.8 / max(len(modes), 1)
    for offset, mode in enumerate(modes):
        values = [next((getattr(s, field) for s in summaries if s.dataset == d and s.mode == mode), 0.0) for d in datasets]
        axis.bar([i + offset * width for i in range(len(datasets))], values, width, label=MODE_LABELS[mode])
    axis.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(datasets))], datasets)
    axis.set_ylim(0, top)
    axis.set_ylabel(label)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def read_summaries(folder: Path) -> list[dict]:
    """The summaries in a report folder's report.json; a DuetError that names what is missing or broken."""
    report = folder / "report.json"
    if not folder.is_dir():
        raise DuetError(f"no report folder at {folder}; give a folder written by duet eval --out")
    if not report.is_file():
        raise DuetError(f"{folder} has no report.json; give a folder written by duet eval --out (it writes report.json when it finishes)")
    try:
        summaries = json.loads(report.read_text(encoding="utf-8"))["summaries"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DuetError(f"cannot read {report}: {str(error).splitlines()[0] if str(error) else type(error).__name__} "
                        f"({type(error).__name__}); write it again with duet eval --out {folder}") from error
    if not isinstance(summaries, list):
        raise DuetError(f"cannot read {report}: its summaries are not a list; write it again with duet eval --out {folder}")
    return summaries


def compare_table(first: Path, second: Path) -> str:
    """Two reports side by side, matched on dataset and mode."""
    a, b = (read_summaries(path) for path in (first, second))
    index = {(s["dataset"], s["mode"]): s for s in b}
    lines = [f"| dataset | mode | accuracy {first.name} | accuracy {second.name} | change | requests/q {first.name} | requests/q {second.name} |",
             "|---|---|---|---|---|---|---|"]
    for s in a:
        other = index.get((s["dataset"], s["mode"]))
        if other is None:
            continue
        change = other["accuracy"] - s["accuracy"]
        lines.append(f"| {s['dataset']} | {s['mode']} | {s['accuracy']:.1%} | {other['accuracy']:.1%} | {change:+.1%} | "
                     f"{s['requests_per_question']:.2f} | {other['requests_per_question']:.2f} |")
    return "\n".join(lines)
