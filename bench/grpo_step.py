"""One GRPO step of duet against one of TRL's GRPOTrainer, measured side by side in one run.

Both train the same model (the embedded SmolLM2-135M, fp32, on the CPU unless --device says otherwise) on the same
prompts (duet's requester prompt for each question: system prompt, few-shot examples, question), with the same group
size, token budget, sampling temperature and reward function, single turn and without tools (duet's graph runs with
max_calls 0). Each engine runs in its own process, one after the other, for --steps steps; the first step (model
loading, warm-up) is left out of the figures.

    python bench/grpo_step.py                     # 4 questions x G=4, 96 new tokens
    python bench/grpo_step.py --model PATH --device cuda --dtype bfloat16 --questions 8 --group 8 --tokens 256

On a GPU, PATH can be a randomly initialised model of a real shape (bench/random_model.py): it never stops early,
so every rollout runs to the token budget, and the peak GPU memory of each engine is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def digit_share(row: dict, state) -> float:
    """duet's form of the shared reward: the share of digits in what the requester wrote."""
    text = "".join(s.text for s in state.trajectory.segments if s.source == "requester")
    return digit_share_of(text)


def digit_share_of(text: str) -> float:
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def run_duet(args, data: Path, out: Path) -> dict:
    from duet.configfile import load_config
    from training.config import GRPORunConfig
    from training.trainer import train

    config = load_config(GRPORunConfig, None, {
        "model": {"requester": args.model, "coder": args.model, "dtype": args.dtype},
        "data": {"train": [str(data)], "order": "file"},
        "rewards": {"weights": {"answer": 0.0, "format": 0.0, "digits": 1.0}, "functions": {"digits": "grpo_step:digit_share"}},
        "grpo": {"output_dir": str(out), "max_steps": args.steps, "num_generations": args.group,
                 "per_device_train_batch_size": args.questions * args.group, "learning_rate": 1e-6, "temperature": 1.0,
                 "save_steps": 10_000, "report_to": ["none"], "loss_type": "dapo", "beta": 0.0},
        "agent": {"requester": {"max_segment_tokens": args.tokens}, "limits": {"max_calls": 0, "max_total_tokens": args.tokens},
                  "backends": {"device": args.device, "dtype": args.dtype, "max_batch_size": args.questions * args.group}},
    })
    train(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    return peak_memory() | {
        "step_s": statistics.fmean(r["time/step"] for r in rows),
        "generation_s": statistics.fmean(r["time/rollout"] for r in rows),
        "update_s": statistics.fmean(r["time/update"] + r["time/reference"] for r in rows),
        "tokens": statistics.fmean(r["completion_length"] for r in rows) * args.questions * args.group,
    }


def run_trl(args, data: Path, out: Path) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import parse_spec, resolve_weights
    from agents.requester import requester_messages

    prompts = [requester_messages(json.loads(line)["question"]) for line in data.read_text().splitlines()]
    weights = resolve_weights(parse_spec(args.model))
    timings = {"generation": [], "step": [], "tokens": []}

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.began = time.perf_counter()

        def on_step_end(self, *_, **__):
            timings["step"].append(time.perf_counter() - self.began)

    config = GRPOConfig(
        output_dir=str(out), use_cpu=args.device == "cpu", bf16=False, report_to="none", max_steps=args.steps, logging_steps=1,
        save_strategy="no", num_generations=args.group, per_device_train_batch_size=args.questions * args.group,
        max_completion_length=args.tokens, gradient_checkpointing=False, learning_rate=1e-6, temperature=1.0,
        loss_type="dapo", beta=0.0, seed=42, shuffle_dataset=False, model_init_kwargs={"dtype": args.dtype},
    )
    trainer = GRPOTrainer(model=weights, reward_funcs=lambda completions, **_: [digit_share_of(c[0]["content"]) for c in completions],
                          args=config, train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[StepClock()])
    generate = trainer._generate

    def timed_generate(*a, **k):
        began = time.perf_counter()
        result = generate(*a, **k)
        timings["generation"].append(time.perf_counter() - began)
        timings["tokens"].append(sum(len(ids) for ids in result[1]))
        return result

    trainer._generate = timed_generate
    trainer.train()
    steps, generation, tokens = timings["step"][1:], timings["generation"][1:], timings["tokens"][1:]
    return peak_memory() | {"step_s": statistics.fmean(steps), "generation_s": statistics.fmean(generation),
            "update_s": statistics.fmean(s - g for s, g in zip(steps, generation)), "tokens": statistics.fmean(tokens)}


def peak_memory() -> dict:
    import torch

    return {"peak_gib": torch.cuda.max_memory_allocated() / 2**30} if torch.cuda.is_available() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["duet", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.engine:
        data, out = Path(os.environ["BENCH_DATA"]), Path(os.environ["BENCH_OUT"])
        result = run_duet(args, data, out) if args.engine == "duet" else run_trl(args, data, out)
        print("RESULT " + json.dumps(result))
        return

    from training.data import generate, write_jsonl

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "questions.jsonl"
        write_jsonl(generate("big-value", args.questions * args.steps, seed=7), data)
        results = {}
        for engine in ("trl", "duet"):
            env = {**os.environ, "BENCH_DATA": str(data), "BENCH_OUT": str(Path(scratch) / engine),
                   "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench"), os.environ.get("PYTHONPATH", "")])}
            command = [sys.executable, __file__, "--engine", engine, *sys.argv[1:]]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{engine} failed:\n{done.stderr[-3000:]}")
            results[engine] = json.loads(line[len("RESULT "):])
    print(f"GRPO step, {args.questions} questions x G={args.group}, up to {args.tokens} new tokens, {args.model} on {args.device}, "
          f"{args.dtype}, mean of steps 2-{args.steps}")
    print(f"{'engine':8} {'step s':>8} {'generate s':>11} {'update s':>9} {'tokens':>7} {'tokens/s':>9} {'peak GiB':>9}")
    for engine, r in results.items():
        peak = f"{r['peak_gib']:9.1f}" if "peak_gib" in r else f"{'-':>9}"
        print(f"{engine:8} {r['step_s']:8.1f} {r['generation_s']:11.1f} {r['update_s']:9.1f} {r['tokens']:7.0f} {r['tokens'] / r['generation_s']:9.1f} {peak}")
    print(f"duet / TRL step time: {results['duet']['step_s'] / results['trl']['step_s']:.2f}x")


if __name__ == "__main__":
    main()
