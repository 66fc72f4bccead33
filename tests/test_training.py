"""GRPO training end to end on tiny random models: it learns a reachable reward, logs every metric, checkpoints,
resumes exactly after kill -9, runs data-parallel under accelerate, saves LoRA adapters, and survives bad steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from duet.configfile import load_config
from training.config import GRPORunConfig
from training.data import generate, write_jsonl
from training.trainer import train

REPO = Path(__file__).resolve().parents[1]
EVERY_STEP = {
    "reward", "reward_std", "rewards/answer", "rewards/format", "rewards/even", "reward_weight/answer", "accuracy", "format_rate",
    "answered_rate", "asked_rate", "requests_per_trajectory", "executor_error_rate", "recovery_rate", "error_rate", "completion_length",
    "dropped_groups", "frac_reward_zero_std", "learning_rate", "skipped", "time/rollout", "time/reference", "time/update",
    "time/step", "sync/weights_spread",
}
EVERY_UPDATE = {"loss", "grad_norm", "entropy", "clip_ratio/low", "clip_ratio/high", "clip_ratio/region", "logprob_mismatch/mean", "logprob_mismatch/max"}


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "questions.jsonl"
    write_jsonl(generate("big-value", 8, seed=3), path)
    return path


def recipe(tmp_path, tiny_dir, questions, **sections) -> dict:
    """One token per rollout and a reward for an even first token: a random model can learn it in a few steps."""
    config = {
        "model": {"requester": str(tiny_dir), "coder": str(tiny_dir)},
        "data": {"train": [str(questions)], "order": "file"},
        "rewards": {"weights": {"answer": 1.0, "format": 0.0, "even": 1.0}, "functions": {"even": "tests.toy_rewards:first_token_even"}},
        "grpo": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "num_generations": 8, "per_device_train_batch_size": 8,
                 "gradient_accumulation_steps": 2, "learning_rate": 0.02, "lr_scheduler_type": "constant", "temperature": 0.5,
                 "save_steps": 1, "seed": 5},
        "agent": {"requester": {"max_segment_tokens": 1}, "limits": {"max_total_tokens": 1, "max_calls": 0}},
    }
    for section, values in sections.items():
        config[section] = {**config[section], **values}
    return config


def run(config: dict) -> list[dict]:
    train(load_config(GRPORunConfig, None, config))
    return read_jsonl(Path(config["grpo"]["output_dir"]) / "metrics.jsonl")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grpo_learns_a_reachable_reward_and_logs_everything(tmp_path, tiny_dir, questions):
    config = recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 6, "save_steps": 6, "report_to": ["tensorboard"]})
    rows = run(config)
    rewards = [row["reward"] for row in rows]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rewards[-1] >= 0.9 and (rewards[0] + rewards[1]) / 2 <= 0.7, rewards
    assert all(EVERY_STEP <= set(row) for row in rows), [EVERY_STEP - set(row) for row in rows]
    assert all(EVERY_UPDATE <= set(row) for row in rows if row["dropped_groups"] < 2), [EVERY_UPDATE - set(row) for row in rows]
    assert rows[0]["logprob_mismatch/max"] < 1e-4  # the trainer recomputes what the fp32 backend recorded
    assert all(row["format_rate"] == row["rewards/format"] for row in rows)  # format_rate is the format reward's rate
    out = Path(config["grpo"]["output_dir"])
    assert (out / "curves.png").stat().st_size > 10_000
    assert list(out.rglob("events.out.tfevents.*"))
    checkpoint = out / "checkpoint-latest"
    assert checkpoint.is_symlink() and (checkpoint / "model.safetensors").is_file() and (checkpoint / "trainer" / "optimizer.pt").is_file()
    asked = subprocess.run([sys.executable, "-m", "duet", "ask", "What is 2 + 2?", "--requester", str(checkpoint), "--coder", str(tiny_dir), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["status"] in {"answered", "no_answer", "limit"}


def test_equal_reward_groups_are_dropped_and_counted(tmp_path, tiny_dir, questions):
    """A random model never answers right, so with the answer reward alone every group is all zeros."""
    rows = run(recipe(tmp_path, tiny_dir, questions, rewards={"weights": {"answer": 1.0}, "functions": {}}, grpo={"max_steps": 1}))
    assert rows[0]["dropped_groups"] == 2 and rows[0]["frac_reward_zero_std"] == 1.0 and rows[0]["skipped"] == 1.0


def test_training_in_the_inline_mode_loads_no_coder_and_the_checkpoint_remembers_it(tmp_path, tiny_dir, questions):
    """The coder named here cannot be reached, so the run would stop at once if the inline mode loaded it."""
    from agents.models import trained_settings

    config = recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 1})
    config["model"]["coder"] = "openai:http://127.0.0.1:1/v1#coder"
    config["agent"]["requester"] = {**config["agent"]["requester"], "mode": "inline"}
    rows = run(config)
    assert [row["step"] for row in rows] == [1] and rows[0]["error_rate"] == 0.0
    assert trained_settings(str(Path(config["grpo"]["output_dir"]) / "checkpoint-latest"))["requester"]["mode"] == "inline"


def test_training_from_a_checkpoint_goes_on_under_the_limits_it_remembers(tmp_path, tiny_dir, questions):
    """The recipe names no limits: the rollouts are cut to the one token the checkpoint was trained with (the
    defaults would allow 256 a segment), and the new checkpoint remembers the same, with what the recipe did set."""
    import shutil

    from agents.models import trained_settings

    start = tmp_path / "start"
    shutil.copytree(tiny_dir, start)
    (start / "duet.json").write_text(json.dumps({"base": None, "requester": {"few_shot": False, "mode": "request", "max_segment_tokens": 1},
                                                 "limits": {"max_calls": 0, "max_total_tokens": 1}}))
    config = recipe(tmp_path, tiny_dir, questions, model={"requester": str(start)}, grpo={"max_steps": 1})
    config["agent"] = {"limits": {"max_calls": 1}}
    rows = run(config)
    assert rows[0]["completion_length"] <= 1
    assert trained_settings(str(Path(config["grpo"]["output_dir"]) / "checkpoint-latest")) == {
        "requester": {"few_shot": False, "mode": "request", "max_segment_tokens": 1}, "limits": {"max_calls": 1, "max_total_tokens": 1},
        "tools": {"registry": [{"name": "coder", "kind": "coder", "target": None, "description": None, "timeout_s": 10.0}], "default": None}}


def test_a_vllm_engine_sleeps_through_each_update_and_wakes_for_the_push(tmp_path, tiny_dir, questions, monkeypatch):
    """The order the trainer drives a vllm: rollout engine in, with sleep mode: rollouts, sleep (its memory freed for
    the update), wake, push the new weights, and never a generation while asleep. The engine here stands in for vLLM
    (it generates with the trained module itself), so the order is checked without a GPU."""
    import training.trainer as trainer
    from agents.backends.transformers_local import TransformersBackend

    events = []

    class RecordingEngine(TransformersBackend):
        asleep = False

        async def generate(self, requests):
            assert not self.asleep, "generated while asleep"
            events.append("generate")
            return await super().generate(requests)

        def sleep(self, keep_weights):
            self.asleep = True
            events.append(f"sleep keep_weights={keep_weights}")

        def wake_up(self):
            self.asleep = False
            events.append("wake_up")

        def load_weights(self, weights):
            events.append(f"load_weights {len(weights)}")

    def recording_backend(policy, model, agent, seed, sleep_mode=False):
        assert policy.rollout_engine == "vllm" and sleep_mode
        return RecordingEngine(model, policy.tokenizer, name="recording", seed=seed)

    monkeypatch.setattr(trainer, "rollout_backend", recording_backend)
    config = recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 2, "vllm_enable_sleep_mode": True})
    config["model"]["requester"] = f"vllm:{tiny_dir}"
    rows = run(config)
    assert len(rows) == 2 and all("time/weight_sync" in row for row in rows)
    steps = [event for event in events if event != "generate"]
    assert steps[:3] == steps[3:] and steps[0] == "sleep keep_weights=False" and steps[1] == "wake_up" and steps[2].startswith("load_weights ")
    assert events[0] == "generate" and events.index("sleep keep_weights=False") > 0


def test_a_reward_schedule_reaches_the_update(tmp_path, tiny_dir, questions):
    """The weight moves from 1 to 0 over two steps: each rollout's reward is that step's weight times its component,
    and at weight 0 every group has equal rewards, so the update sees the schedule (nothing left to learn). The
    schedule counts steps as metrics.jsonl does, from 1."""
    config = recipe(tmp_path, tiny_dir, questions, rewards={"weights": {"answer": 0.0, "even": [[1, 1.0], [3, 0.0]]}})
    rows = run(config)
    assert [row["reward_weight/even"] for row in rows] == [1.0, 0.5, 0.0]
    for rollout in read_jsonl(Path(config["grpo"]["output_dir"]) / "rollouts" / "rank-0.jsonl"):
        weight = rows[rollout["step"] - 1]["reward_weight/even"]
        assert rollout["reward"] == pytest.approx(weight * rollout["rewards"]["even"])
    assert rows[2]["dropped_groups"] == 2 and rows[1]["dropped_groups"] < 2


def test_no_reference_model_is_loaded_when_beta_is_zero(tmp_path, tiny_dir, questions, monkeypatch):
    import copy
    import types

    import training.policy

    copies = []
    monkeypatch.setattr(training.policy, "copy", types.SimpleNamespace(deepcopy=lambda model: copies.append(model) or copy.deepcopy(model)))
    run(recipe(tmp_path / "a", tiny_dir, questions, grpo={"max_steps": 1, "beta": 0.0}))
    assert copies == []
    rows = run(recipe(tmp_path / "b", tiny_dir, questions, grpo={"max_steps": 1, "beta": 0.04}))
    assert len(copies) == 1 and rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the reference starts equal to the policy
    rows = run(recipe(tmp_path / "c", tiny_dir, questions, model={"lora": {"r": 4}}, grpo={"max_steps": 1, "beta": 0.04}))
    assert len(copies) == 1 and "kl" in rows[0]  # LoRA: the reference is the same model with its adapter off


def test_a_non_finite_loss_skips_that_step_and_the_run_goes_on(tmp_path, tiny_dir, questions, monkeypatch):
    import training.trainer

    real, calls = training.trainer.grpo_loss, []

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), stats) if len(calls) <= 2 else (loss, stats)

    monkeypatch.setattr(training.trainer, "grpo_loss", poisoned)
    rows = run(recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 2}))
    assert rows[0]["skipped"] == 1.0 and rows[1]["skipped"] == 0.0 and len(rows) == 2


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, tiny_dir, questions, monkeypatch, capsys):
    from transformers import PreTrainedModel

    real, saves = PreTrainedModel.save_pretrained, []

    def disk_fills_up(self, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_fills_up)
    config = recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 2})
    rows = run(config)
    out = Path(config["grpo"]["output_dir"])
    assert len(rows) == 2 and (out / "checkpoint-latest").resolve().name == "checkpoint-1"
    assert not list(out.glob(".checkpoint-*")) and not (out / "checkpoint-2").exists()
    assert "could not save checkpoint-2" in capsys.readouterr().err


def test_rows_without_an_answer_are_skipped_and_counted(tmp_path, tiny_dir, questions, capsys):
    data = tmp_path / "holes.jsonl"
    data.write_text(questions.read_text() + json.dumps({"id": "hole", "question": "What is 1 + 1?", "answer": ""}) + "\n")
    run(recipe(tmp_path, tiny_dir, data, grpo={"max_steps": 1}))
    assert "skipped 1 data rows" in capsys.readouterr().err


def test_lora_checkpoints_hold_only_the_adapter_and_load_for_asking(tmp_path, tiny_dir, questions):
    import torch

    from agents.models import load_causal_lm

    config = recipe(tmp_path, tiny_dir, questions, model={"lora": {"r": 4, "lora_alpha": 8}}, grpo={"max_steps": 2, "learning_rate": 0.05})
    run(config)
    checkpoint = Path(config["grpo"]["output_dir"]) / "checkpoint-latest"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    trained, _ = load_causal_lm(str(checkpoint))
    base, _ = load_causal_lm(str(tiny_dir))
    changed = [name for name, weight in base.state_dict().items() if not torch.equal(weight, trained.state_dict()[name])]
    assert changed and set(trained.state_dict()) == set(base.state_dict())  # merged: a plain model again


def launch(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_resume_after_kill_9_continues_exactly(tmp_path, tiny_dir, questions):
    """A run killed mid-step and resumed gives the same questions, rewards and loss for the next steps as a run
    that was never interrupted."""
    def config_file(name: str) -> Path:
        config = recipe(tmp_path / name, tiny_dir, questions, grpo={"max_steps": 4, "save_steps": 1, "report_to": ["none"]})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    whole = subprocess.run([sys.executable, "-m", "duet", "train", str(config_file("whole"))], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed_dir = tmp_path / "killed" / "run"
    process = launch([sys.executable, "-m", "duet", "train", str(config_file("killed"))])
    deadline = time.monotonic() + 300
    while not (killed_dir / "checkpoint-2").is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (killed_dir / "checkpoint-latest").resolve().name in {"checkpoint-2", "checkpoint-3"}
    resumed = subprocess.run([sys.executable, "-m", "duet", "train", str(config_file("killed")), "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = read_jsonl(tmp_path / "whole" / "run" / "metrics.jsonl")
    got = read_jsonl(killed_dir / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for mine, theirs in zip(got, expected):
        assert mine["reward"] == pytest.approx(theirs["reward"]) and mine["dropped_groups"] == theirs["dropped_groups"]
        assert ("loss" in mine) == ("loss" in theirs)  # a step whose groups were all dropped has no loss in either
        assert mine.get("loss", 0.0) == pytest.approx(theirs.get("loss", 0.0), rel=1e-4, abs=1e-7)

    def ids(path):
        return [(r["step"], r["id"], r["sample"], r["reward"]) for r in read_jsonl(path / "rollouts" / "rank-0.jsonl")]
    assert ids(killed_dir) == ids(tmp_path / "whole" / "run")


def test_two_processes_under_accelerate_take_different_questions_and_stay_in_sync(tmp_path, tiny_dir, questions):
    config = recipe(tmp_path, tiny_dir, questions, grpo={"max_steps": 2, "save_steps": 2, "report_to": ["none"]})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "duet", "train", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "run"
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["sync/weights_spread"] == 0.0 for r in rows)
    ranks = [read_jsonl(out / "rollouts" / f"rank-{rank}.jsonl") for rank in (0, 1)]
    for step in (1, 2):
        mine = [{r["id"] for r in rollouts if r["step"] == step} for rollouts in ranks]
        assert mine[0] and mine[1] and not mine[0] & mine[1]
