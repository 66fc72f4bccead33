"""What a run computes besides the loss: the learning rate at each step is the same on any number of processes (GRPO
and SFT), the reference runs under the policy's autocast (so the KL starts at 0 in bf16), and it runs in the
update's micro-batches over the kept trajectories only."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from duet.configfile import load_config
from tests.test_training import questions, read_jsonl, recipe, run  # noqa: F401 (questions is a fixture)
from training.config import SFTRunConfig
from training.data import write_jsonl
from training.sft import run_sft

REPO = Path(__file__).resolve().parents[1]


def launch_two_processes(*duet_command: str) -> None:
    """`accelerate launch` with two data-parallel CPU processes (gloo), as the README's multi-GPU command."""
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "duet", *duet_command],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_grpo_learning_rate_per_step_is_the_same_on_two_processes_as_on_one(tmp_path, tiny_dir, questions):
    """accelerate's scheduler wrapper steps the schedule num_processes times per optimizer step; a linear schedule
    with warm-up shows it at once. Every group is kept, so both runs make an optimizer step at every step."""
    settings = {"max_steps": 4, "lr_scheduler_type": "linear", "warmup_steps": 2, "save_steps": 4, "report_to": ["none"], "drop_equal_reward_groups": False}
    one = run(recipe(tmp_path / "one", tiny_dir, questions, grpo=settings))
    config = recipe(tmp_path / "two", tiny_dir, questions, grpo=settings)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    launch_two_processes("train", str(path))
    two = read_jsonl(Path(config["grpo"]["output_dir"]) / "metrics.jsonl")
    expected = [0.01, 0.02, 0.01, 0.0]  # the rate after each step: warm-up to 0.02 over 2 steps, then down to 0 at step 4
    assert [row["learning_rate"] for row in one] == pytest.approx(expected)
    assert [row["learning_rate"] for row in two] == pytest.approx(expected)


def test_sft_learning_rate_per_step_is_the_same_on_two_processes_as_on_one(tmp_path, tiny_dir):
    """Two processes with batches of 2 make the same optimizer steps as one process with batches of 4."""
    traces = tmp_path / "traces.jsonl"
    write_jsonl([{"question": f"What is {n} + {n}?", "response": f"<request>add {n} and {n}</request>\n<result>\n{2 * n}\n</result>\n\\boxed{{{2 * n}}}"} for n in range(8)], traces)
    data = tmp_path / "questions.jsonl"
    write_jsonl([{"id": "x", "question": "What is 1 + 1?", "answer": "2"}], data)

    def config(name: str, batch_size: int) -> dict:
        return {
            "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
            "data": {"train": [str(data)]},
            "traces": {"file": str(traces)},
            "sft": {"output_dir": str(tmp_path / name), "learning_rate": 0.01, "num_train_epochs": 2, "per_device_train_batch_size": batch_size,
                    "lr_scheduler_type": "linear", "warmup_steps": 1, "save_steps": 100, "report_to": ["none"]},
            "agent": {"requester": {"few_shot": False}},
        }

    run_sft(load_config(SFTRunConfig, None, config("one", 4)))
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config("two", 2)))
    launch_two_processes("sft", str(path))
    one, two = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("one", "two"))
    expected = [0.01, 2 / 3 * 0.01, 1 / 3 * 0.01, 0.0]  # 8 traces in 2 steps an epoch, 2 epochs, 1 step of warm-up
    assert [row["learning_rate"] for row in one] == pytest.approx(expected)
    assert [row["learning_rate"] for row in two] == pytest.approx(expected)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate's state is a per-process singleton whose mixed precision is fixed by the first Accelerator: a bf16
    run inside the test process resets it before and after, as accelerate's own tests do."""
    from accelerate.state import AcceleratorState, GradientState

    def reset():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    reset()
    yield
    reset()


def test_in_bf16_the_kl_is_zero_before_any_update(tmp_path, tiny_dir, questions, fresh_accelerate_state):
    """With full fine-tuning the reference is a copy made before accelerator.prepare, which wraps only the policy's
    forward in autocast: run outside it, the reference would compute in fp32 and the policy in bf16."""
    rows = run(recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 1, "beta": 0.04, "bf16": True, "report_to": ["none"]}))
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)


def test_the_reference_runs_in_the_updates_micro_batches_over_kept_rows_only(tmp_path, tiny_dir, questions, monkeypatch):
    import training.policy

    real, calls = training.policy.Policy.reference, []

    def recording(self, beta):
        reference = real(self, beta)
        return lambda batch, temperature: calls.append(batch.input_ids.shape[0]) or reference(batch, temperature)

    monkeypatch.setattr(training.policy.Policy, "reference", recording)
    rows = run(recipe(tmp_path / "a", tiny_dir, questions, grpo={"max_steps": 1, "beta": 0.04, "report_to": ["none"]}))
    kept = 16 - 8 * rows[0]["dropped_groups"]  # 2 questions x 8 generations, per_device_train_batch_size 8, 2 micro-batches
    assert sum(calls) == kept and all(size <= 8 for size in calls) and len(calls) == min(kept, 2)
    calls.clear()
    rows = run(recipe(tmp_path / "b", tiny_dir, questions, rewards={"weights": {"answer": 1.0}, "functions": {}}, grpo={"max_steps": 1, "beta": 0.04}))
    assert rows[0]["dropped_groups"] == 2 and calls == []  # every group dropped: nothing for the reference to score
