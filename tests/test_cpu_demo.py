"""The committed CPU demo recipe, run as the README runs it (a handful of steps, on the embedded model): it starts,
logs every metric, and leaves a checkpoint that `duet ask --requester` loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.data import generate, write_jsonl

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PER_STEP = {"reward", "accuracy", "format_rate", "asked_rate", "requests_per_trajectory", "completion_length", "dropped_groups",
            "rewards/answer", "rewards/format", "reward_weight/format", "learning_rate", "time/rollout", "time/update", "time/step"}


def duet(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "duet", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_cpu_demo_recipe_runs_logs_and_checkpoints(tmp_path):
    questions = tmp_path / "train.jsonl"
    rows = generate("big-value", 4, seed=11)
    write_jsonl(rows, questions)
    # the traces the cold start would keep (sampling them takes minutes): right answers that asked, in the protocol
    traces = tmp_path / "traces.jsonl"
    write_jsonl([{"question": row["question"], "response": f"I need the value.\n<request>compute it</request>\n<result>\n{row['answer']}\n</result>\n"
                  f"The answer is \\boxed{{{row['answer']}}}."} for row in rows], traces)
    sft_out, grpo_out = tmp_path / "sft", tmp_path / "grpo"
    duet("sft", "configs/cpu-demo-sft.yaml", "--set", f"data.train=[{questions}]", "--set", f"traces.file={traces}",
         "--set", f"sft.output_dir={sft_out}", "--set", "sft.num_train_epochs=1", "--set", "sft.report_to=[none]")
    assert (sft_out / "checkpoint-latest" / "model.safetensors").is_file()
    duet("train", "configs/cpu-demo-grpo.yaml", "--set", f"model.requester={sft_out / 'checkpoint-latest'}", "--set", f"data.train=[{questions}]",
         "--set", f"grpo.output_dir={grpo_out}", "--set", "grpo.max_steps=2", "--set", "grpo.save_steps=2", "--set", "grpo.per_device_train_batch_size=4",
         "--set", "grpo.gradient_accumulation_steps=1", "--set", "grpo.report_to=[tensorboard]")
    metrics = [json.loads(line) for line in (grpo_out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [1, 2]
    assert all(PER_STEP <= set(row) for row in metrics), [PER_STEP - set(row) for row in metrics]
    assert (grpo_out / "curves.png").is_file() and list(grpo_out.rglob("events.out.tfevents.*"))
    checkpoint = grpo_out / "checkpoint-latest"
    asked = json.loads(duet("ask", "What is 48213907 * 3301?", "--requester", str(checkpoint), "--json").stdout)
    assert asked["status"] in {"answered", "no_answer", "limit"} and asked["tokens"]["requester"] > 0
    assert asked["tokens"]["prompt"] < 200  # the checkpoint remembers it was trained without the few-shot examples (~340 tokens)
