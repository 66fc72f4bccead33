"""What a training run shows and keeps while it runs.

    terminal        a progress bar with ETA and the live reward, accuracy, format rate and request rate (main process);
                    into a file or a pipe (nohup, SLURM), the same as one plain line every logging_steps steps
    metrics.jsonl   one JSON row per step, every metric below (main process)
    trackers        TensorBoard event files, or trackio / W&B, through accelerate (every logging_steps)
    curves.png      reward, accuracy, format rate, request rate, KL and response length over steps, rewritten as it runs:
                    each step a faint point, a smoothed line through them, held-out evaluations as marked points
    rollouts/rank-N.jsonl   every trajectory of process N: question id, reward and its parts, status, what it wrote

On resume, rows logged after the checkpoint (by the run that was killed) are cut, so the log has each step once.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from rich.console import Console

from agents.errors import DuetError
from training.evaluate import summarize
from training.progress import Progress

CURVES = [("reward", "reward"), ("accuracy", "accuracy"), ("format_rate", "format rate"), ("asked_rate", "share with a request"),
          ("kl", "KL to reference"), ("completion_length", "requester tokens")]
TOOL_CURVES = [("tool_choice_rate", "chose the row's tool")]  # drawn in runs whose rows name their tool


class RunLog:
    def __init__(self, accelerator, args, config, start_step: int, skipped_rows: int):
        self.main = accelerator.is_main_process
        self.accelerator, self.args = accelerator, args
        self.output_dir = Path(args.output_dir)
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.rollouts_path = self.output_dir / "rollouts" / f"rank-{accelerator.process_index}.jsonl"
        self.rollouts_path.parent.mkdir(parents=True, exist_ok=True)
        self.history = _cut_after(self.metrics_path, start_step) if self.main else []
        _cut_after(self.rollouts_path, start_step)
        self.console = Console(stderr=True, soft_wrap=True)
        self.progress = None
        if self.main:
            if skipped_rows:
                self.note(f"skipped {skipped_rows} data rows without a usable question or answer")
            accelerator.init_trackers(self.output_dir.name, config=_flat(config.model_dump(mode="json")))
            self.progress = Progress("GRPO", args.max_steps, unit="step", completed=start_step, console=self.console,
                                     every=args.logging_steps, seconds=None).start()

    def step(self, step: int, outcomes: list[dict], weights: dict, update: dict, timings: dict, optimizer) -> None:
        """Every process calls this with every process's outcome of the step; the main process writes."""
        if not self.main:
            return
        records = [r for part in outcomes for r in part["records"]]
        components = [c for part in outcomes for c in part["components"]]
        rewards = [r for part in outcomes for r in part["rewards"]]
        dropped, groups = sum(part["dropped"] for part in outcomes), sum(part["groups"] for part in outcomes)
        checksums = [part["checksum"] for part in outcomes]
        summary = summarize(records)[0]
        row = {
            "step": step,
            "reward": statistics.fmean(rewards),
            "reward_std": statistics.stdev(rewards) if len(rewards) > 1 else 0.0,
            **{f"rewards/{name}": statistics.fmean(c[name] for c in components) for name in components[0]},
            **{f"reward_weight/{name}": value for name, value in weights.items()},
            "accuracy": summary.accuracy,
            "format_rate": summary.format_rate,
            "answered_rate": summary.answered_rate,
            "asked_rate": summary.asked_rate,
            "requests_per_trajectory": summary.requests_per_question,
            "executor_error_rate": summary.executor_error_rate,
            "recovery_rate": summary.recovery_rate,
            "error_rate": sum(r.status == "error" for r in records) / len(records),
            "completion_length": statistics.fmean(n for part in outcomes for n in part["lengths"]),
            "dropped_groups": dropped,
            "frac_reward_zero_std": dropped / groups,
            "learning_rate": optimizer.param_groups[0]["lr"],
            **{k: v for k, v in update.items() if k != "reason"},
            **{f"time/{name}": seconds for name, seconds in timings.items()},
            "sync/weights_spread": max(checksums) - min(checksums),
            **tool_metrics(summary),
        }
        self.history.append(row)
        with self.metrics_path.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(row) + "\n")
        if "reason" in update:
            self.note(f"step {step}: update skipped ({update['reason']})")
        live = f"reward {row['reward']:.2f}  accuracy {row['accuracy']:.0%}  format {row['format_rate']:.0%}  asked {row['asked_rate']:.0%}"
        if "tool_choice_rate" in row:
            live += f"  chose the row's tool {row['tool_choice_rate']:.0%}"
        self.progress.update(completed=step, live=live)
        if step % self.args.logging_steps == 0 or step == self.args.max_steps:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=step)
            plot_curves(self.history, self.output_dir / "curves.png", missing=self.missing_reasons(), curves=curves_of(self.history))

    def rollouts(self, step: int, rank: int, rows: list[dict], states: list, components: list[dict], rewards: list[float], group_size: int) -> None:
        with self.rollouts_path.open("a", encoding="utf-8") as sink:
            for index, (row, state, parts, reward) in enumerate(zip(rows, states, components, rewards, strict=True)):
                sample = index % group_size
                written = "".join(s.text for s in state.trajectory.segments if s.source != "prompt")
                sink.write(json.dumps({
                    "step": step, "rank": rank, "id": row["id"], "sample": sample, "gold": row["answer"], "answer": state.answer,
                    "status": state.status, "reward": reward, "rewards": parts, "requests": len(state.calls),
                    "tools": [call.tool for call in state.calls], "response": written,
                }, ensure_ascii=False) + "\n")

    def missing_reasons(self) -> dict[str, str]:
        """Why a curve has no points in this run, said in the figure's note instead of an empty panel."""
        return {"kl": "beta is 0, so no reference model"} if not self.args.beta else {}

    def note(self, text: str) -> None:
        if self.main:
            self.console.print(f"[dim]{text}[/]", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.main:
            self.accelerator.end_training()


SMOOTHING = 0.8  # the weight of TensorBoard's smoothing slider; W&B's exponential moving average is the same


def smoothed(values: list[float | None], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled towards 0
    (W&B's too). Missing values (None, NaN) are skipped and stay missing."""
    out, average, count = [], 0.0, 0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(math.nan)
            continue
        average, count = average * weight + (1 - weight) * value, count + 1
        out.append(average / (1 - weight**count))
    return out


def curves_figure(history: list[dict], evaluations: list[dict] | None = None, missing: dict[str, str] | None = None, smoothing: float = SMOOTHING,
                  curves: list[tuple[str, str]] = CURVES):
    """The training curves as one figure: each metric of CURVES that has data gets a panel, with every step's value
    as a faint point, their smoothed line over them, and held-out evaluations as marked points. `evaluations` are rows
    {"step", a metric's name: value, ..., "label"?} (e.g. a `duet eval` summary of the checkpoint of that step); rows
    of `history` that carry `eval/NAME` keys add theirs. A metric without data gets no panel: the figure's note names
    it, with its reason from `missing` when given (`{"kl": "beta is 0, so no reference model"}`). `curves` are the
    (metric, title) pairs to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held_out = [dict(row) for row in evaluations or []]
    held_out += [{"step": row["step"], **{k.removeprefix("eval/"): v for k, v in row.items() if k.startswith("eval/")}}
                 for row in history if any(k.startswith("eval/") for k in row)]

    def finite(value) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value)

    panels = [(key, label) for key, label in curves if any(finite(row.get(key)) for row in [*history, *held_out])]
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows + 0.4), squeeze=False)
    steps = [row["step"] for row in history]
    names = list(dict.fromkeys(row.get("label", "held-out evaluation") for row in held_out))
    for axis, (key, label) in zip(axes.flat, panels):
        values = [row.get(key) if finite(row.get(key)) else math.nan for row in history]
        if any(finite(v) for v in values):
            axis.plot(steps, values, color="C0", alpha=0.25, linewidth=0.8, marker=".", markersize=4, label="each step")
            axis.plot(steps, smoothed(values, smoothing), color="C0", linewidth=2, label=f"smoothed (EMA {smoothing:g})")
        for index, name in enumerate(names):
            mine = sorted((row["step"], row[key]) for row in held_out if row.get("label", "held-out evaluation") == name and finite(row.get(key)))
            if mine:
                axis.plot(*zip(*mine), linestyle="none", marker="D", markersize=6, color=f"C{3 + index}", label=name)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        figure.delaxes(axis)
    if panels:
        _shared_legend(figure)
    else:
        axes.flat[0].text(0.5, 0.5, "no steps logged yet", ha="center", va="center")
        axes.flat[0].set_axis_off()
    absent = [label + (f" ({(missing or {})[key]})" if key in (missing or {}) else "") for key, label in curves if (key, label) not in panels]
    if absent and panels:
        figure.text(0.5, 1.0, "not logged in this run: " + "; ".join(absent), ha="center", va="top", fontsize="small", color="0.35")
    figure.tight_layout(rect=(0, 0.06, 1, 0.95 if absent and panels else 1))
    return figure


def plot_curves(history: list[dict], path: Path, evaluations: list[dict] | None = None, missing: dict[str, str] | None = None,
                curves: list[tuple[str, str]] = CURVES) -> None:
    """curves_figure, written to `path` (under a temporary name first, so a reader never sees half an image)."""
    _save(curves_figure(history, evaluations, missing, curves=curves), path)


def runs_figure(runs: dict[str, list[dict]], curves: list[tuple[str, str]] = CURVES, smoothing: float = SMOOTHING):
    """Several runs' curves on shared panels, one colour per run (its smoothed line over faint points), so two
    recipes or two modes are read against each other; a metric no run logged gets no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
        return [row["step"] for row in history], [row[key] if isinstance(row.get(key), (int, float)) and math.isfinite(row[key]) else math.nan for row in history]

    panels = [(key, label) for key, label in curves if any(not math.isnan(v) for history in runs.values() for v in series(history, key)[1])]
    columns = min(3, max(1, len(panels)))
    figure, axes = plt.subplots(max(1, math.ceil(len(panels) / columns)), columns, figsize=(4 * columns, 3 * math.ceil(max(1, len(panels)) / columns) + 0.4), squeeze=False)
    for axis, (key, label) in zip(axes.flat, panels):
        for index, (name, history) in enumerate(runs.items()):
            steps, values = series(history, key)
            axis.plot(steps, values, color=f"C{index}", alpha=0.2, linewidth=0.8, marker=".", markersize=3)
            axis.plot(steps, smoothed(values, smoothing), color=f"C{index}", linewidth=2, label=name)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        figure.delaxes(axis)
    _shared_legend(figure)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def plot_runs(runs: dict[str, list[dict]], path: Path, curves: list[tuple[str, str]] = CURVES) -> None:
    _save(runs_figure(runs, curves), path)


def _shared_legend(figure) -> None:
    """One legend under the panels, each label once."""
    handles = {}
    for axis in figure.axes:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=max(1, len(handles)), fontsize="small", frameon=False)


def _save(figure, path: Path) -> None:
    """Written under a temporary name first, so a reader never sees half an image."""
    import matplotlib.pyplot as plt

    partial = path.with_suffix(".partial.png")
    figure.savefig(partial, dpi=100)
    plt.close(figure)
    partial.replace(path)


def read_history(run: Path) -> list[dict]:
    """A run's logged steps: `run` is its folder (metrics.jsonl inside) or the file itself. Unreadable lines are skipped
    (a run killed while writing one); a missing or stepless file is a DuetError that says what to give."""
    path = run / "metrics.jsonl" if run.is_dir() else run
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DuetError(f"cannot read {path}: {error.strerror}; give a run folder (a recipe's output_dir) or its metrics.jsonl") from error
    history = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            history.append(row)
    if not history:
        raise DuetError(f"{path} holds no logged steps; give the metrics.jsonl of a run that logged at least one step")
    return history


def _cut_after(path: Path, step: int) -> list[dict]:
    """Keep the rows of steps up to `step` (a resumed run repeats the later ones); return them."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            kept.append(row)
    path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
    return kept


def _flat(config: dict, prefix: str = "") -> dict:
    """Trackers take flat scalar hyperparameters."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


def curves_of(history: list[dict]) -> list[tuple[str, str]]:
    return CURVES + TOOL_CURVES if any("tool_choice_rate" in row for row in history) else CURVES


def tool_metrics(summary) -> dict[str, float]:
    """Per tool: calls per trajectory and the share answered with an error; the tool-selection accuracy on rows that
    name a tool; calls that named a tool the registry does not hold. Nothing for a run that only asked the coder."""
    if list(summary.calls_by_tool) in ([], ["coder"]) and summary.tool_choice_rate is None:
        return {}
    metrics = {f"tools/{name}/calls": rate for name, rate in summary.calls_by_tool.items()}
    metrics |= {f"tools/{name}/error_rate": rate for name, rate in summary.tool_error_rates.items()}
    metrics["tools/unknown_name_rate"] = summary.unknown_tool_rate
    if summary.tool_choice_rate is not None:
        metrics["tool_choice_rate"] = summary.tool_choice_rate
    return metrics
