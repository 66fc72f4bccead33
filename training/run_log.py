"""What a training run shows and keeps while it runs.

    terminal        a progress bar with ETA and the live reward, accuracy, format rate and request rate (main process)
    metrics.jsonl   one JSON row per step, every metric below (main process)
    trackers        TensorBoard event files, or trackio / W&B, through accelerate (every logging_steps)
    curves.png      reward, accuracy, format rate, request rate, KL and response length over steps, rewritten as it runs
    rollouts/rank-N.jsonl   every trajectory of process N: question id, reward and its parts, status, what it wrote

On resume, rows logged after the checkpoint (by the run that was killed) are cut, so the log has each step once.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from training.evaluate import summarize

CURVES = [("reward", "reward"), ("accuracy", "accuracy"), ("format_rate", "format rate"), ("asked_rate", "share with a request"),
          ("kl", "KL to reference"), ("completion_length", "requester tokens")]


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
            self.progress = Progress(
                TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[live]}"), console=self.console,
            )
            self.task = self.progress.add_task("steps", total=args.max_steps, completed=start_step, live="")
            self.progress.start()

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
        }
        self.history.append(row)
        with self.metrics_path.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(row) + "\n")
        if "reason" in update:
            self.note(f"step {step}: update skipped ({update['reason']})")
        live = f"reward {row['reward']:.2f}  acc {row['accuracy']:.0%}  format {row['format_rate']:.0%}  asked {row['asked_rate']:.0%}"
        self.progress.update(self.task, completed=step, live=live)
        if step % self.args.logging_steps == 0 or step == self.args.max_steps:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=step)
            plot_curves(self.history, self.output_dir / "curves.png")

    def rollouts(self, step: int, rank: int, rows: list[dict], states: list, components: list[dict], rewards: list[float], group_size: int) -> None:
        with self.rollouts_path.open("a", encoding="utf-8") as sink:
            for index, (row, state, parts, reward) in enumerate(zip(rows, states, components, rewards, strict=True)):
                sample = index % group_size
                written = "".join(s.text for s in state.trajectory.segments if s.source != "prompt")
                sink.write(json.dumps({
                    "step": step, "rank": rank, "id": row["id"], "sample": sample, "gold": row["answer"], "answer": state.answer,
                    "status": state.status, "reward": reward, "rewards": parts, "requests": len(state.calls), "response": written,
                }, ensure_ascii=False) + "\n")

    def note(self, text: str) -> None:
        if self.main:
            self.console.print(f"[dim]{text}[/]", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.main:
            self.accelerator.end_training()


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(12, 6))
    steps = [row["step"] for row in history]
    for axis, (key, label) in zip(axes.flat, CURVES):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axis.plot(steps, [v if v is not None else float("nan") for v in values], marker="." if len(steps) < 40 else None)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    partial = path.with_suffix(".partial.png")
    figure.savefig(partial, dpi=100)
    plt.close(figure)
    partial.replace(path)


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
