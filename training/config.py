"""Configuration of training runs: one pydantic model per concern, loaded from YAML, overridable with `--set`.

Where a setting means what it means in TRL's `GRPOConfig` or `SFTConfig`, it has TRL's name (and TRL's default,
except where noted: fp32 rather than bf16, logging every step, TensorBoard on), so a TRL user can read a duet recipe
at a glance. The agent's own settings (limits, coder, sandbox, backends) are the same
`AgentConfig` that `duet ask` reads, under `agent:`: training runs the same graph with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from graph.config import AgentConfig, Strict
from training.data import DataSource

ReportTo = Literal["none", "tensorboard", "trackio", "wandb"]


class LoraSettings(Strict):
    """Low-rank adapters through peft; checkpoints then hold only the adapter."""

    r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ModelSettings(Strict):
    requester: str = Field("default", description="the policy being trained: default, a local folder or a hub id")
    coder: str = Field("default", description="the coder, frozen while the requester trains (any model spec, openai: servers "
                       "included); an SFT recipe with role: coder fine-tunes it")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights as loaded; full fine-tuning wants float32 masters (bf16: true autocasts compute)"
    )
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False


class DataSettings(Strict):
    train: list[DataSource] = Field(
        min_length=1,
        description="datasets: a file (JSONL, JSON, parquet, CSV), a dataset folder or a hub id, or a mapping "
        "{path, name, split, question_field, answer_field, answer_format}, e.g. {path: openai/gsm8k, name: main}; "
        "relative paths are read from the current folder",
    )
    order: Literal["curriculum", "shuffle", "file"] = Field(
        "curriculum",
        description="curriculum: easy to hard by the pass rates `duet data filter` saved beside the file (shuffled "
        "when there are none); shuffle: a new seeded order each epoch; file: as written",
    )


ScheduledWeight = float | list[tuple[int, float]]


class RewardSettings(Strict):
    """The reward of a trajectory is the weighted sum of named components. A weight is a number, or a schedule of
    [step, weight] points interpolated linearly (constant before the first point and after the last), e.g. a format
    reward that dominates early: format: [[1, 1.0], [40, 0.2]]. Steps count as the logs do: the first step is 1.
    Built-in components: answer, format, and tool_choice (rows that name their tool in metadata.tool; scored only when
    it has a weight)."""

    weights: dict[str, ScheduledWeight] = Field(default_factory=lambda: {"answer": 1.0, "format": 0.2})
    functions: dict[str, str] = Field(
        default_factory=dict, description="extra components by import path, e.g. brevity: my_pkg.rewards:brevity"
    )

    @model_validator(mode="after")
    def _every_weight_has_a_component(self) -> RewardSettings:
        known = {"answer", "format", "tool_choice", *self.functions}
        unknown = sorted(set(self.weights) - known)
        if unknown:
            raise ValueError(f"weights for unknown reward {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name, weight in self.weights.items():
            if isinstance(weight, list) and (not weight or [s for s, _ in weight] != sorted({s for s, _ in weight})):
                raise ValueError(f"the schedule of {name!r} needs [step, weight] points with increasing steps")
        return self


class TrainingArguments(Strict):
    """What every run shares, named as in TRL and transformers."""

    output_dir: Path
    learning_rate: float = Field(1e-6, gt=0)
    lr_scheduler_type: Literal["constant", "linear", "cosine", "constant_with_warmup"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    per_device_train_batch_size: int = Field(8, ge=1, description="trajectories per forward/backward pass")
    gradient_accumulation_steps: int = Field(1, ge=1)
    bf16: bool = False
    seed: int = 42
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    report_to: list[ReportTo] = Field(default_factory=lambda: ["tensorboard"])


class GRPOSettings(TrainingArguments):
    """GRPO as in TRL's GRPOConfig. One step rolls out per_device_train_batch_size x gradient_accumulation_steps
    trajectories per process (whole groups of num_generations), then makes num_iterations optimizer steps on them."""

    max_steps: int = Field(100, ge=1)
    num_generations: int = Field(8, ge=2, description="G: trajectories per question")
    num_iterations: int = Field(1, ge=1, description="optimizer steps per rollout batch; the old policy is the rollout's")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model")
    use_bias_correction_kl: bool = Field(True, description="weight the KL estimate by the importance ratio, as TRL does")
    epsilon: float = Field(0.2, gt=0, description="lower clip of the importance ratio (and upper, unless epsilon_high)")
    epsilon_high: float | None = Field(None, gt=0)
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    temperature: float = Field(1.0, gt=0, description="rollout sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1)
    drop_equal_reward_groups: bool = Field(True, description="skip groups whose rewards are all equal (published recipe)")
    vllm_enable_sleep_mode: bool = Field(False, description="with a vllm: requester on a GPU, free the engine's memory during the update")
    vllm_importance_sampling_correction: bool = Field(True, description="with a vllm: requester, correct for vLLM's and the trainer's numbers differing")
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = "sequence_mask"
    vllm_importance_sampling_clip_min: float | None = Field(None, ge=0)
    vllm_importance_sampling_clip_max: float | None = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _whole_groups_per_process(self) -> GRPOSettings:
        rollouts = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if rollouts % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x gradient_accumulation_steps ({rollouts}) must be a multiple of "
                f"num_generations ({self.num_generations}), so each process rolls out whole groups"
            )
        return self

    @property
    def questions_per_step(self) -> int:
        """Per process."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations


class GRPORunConfig(Strict):
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings
    rewards: RewardSettings = Field(default_factory=RewardSettings)
    grpo: GRPOSettings
    agent: AgentConfig = Field(default_factory=AgentConfig)


class TraceSettings(Strict):
    """Where cold-start traces come from. Without `file`, the graph runs `samples_per_question` times per question at
    each temperature with `teacher` as requester (the model being trained when unset), and a run is kept when its
    answer is right and, with require_request, it asked at least once (rejection sampling)."""

    file: Path | None = Field(None, description="a JSONL of traces to train on instead of sampling them")
    demonstrations: Path | None = Field(
        None,
        description="hand-written traces trained on together with the sampled ones (or the file): a few showing steps "
        "the model never gets right by itself give GRPO something to explore from",
    )
    teacher: str | None = None
    samples_per_question: int = Field(4, ge=1)
    temperatures: list[float] = Field(default_factory=lambda: [0.7, 1.0], min_length=1)
    require_request: bool = True
    few_shot: bool = Field(True, description="sample with the worked examples in the prompt (the model is trained for agent.requester.few_shot)")
    max_per_question: int = Field(2, ge=1)
    save_to: Path | None = Field(None, description="write the kept traces here for inspection")


class SFTSettings(TrainingArguments):
    learning_rate: float = Field(2e-5, gt=0)
    num_train_epochs: int = Field(3, ge=1)


class SFTRunConfig(Strict):
    model: ModelSettings = Field(default_factory=ModelSettings)
    role: Literal["requester", "coder"] = Field(
        "requester",
        description="coder: train model.coder on traces.file's {request, program} pairs (duet data coder-pairs), with "
        "the coder's own prompt, then give the checkpoint as --coder",
    )
    data: DataSettings | None = Field(None, description="the questions traces are sampled from; not read with traces.file")
    traces: TraceSettings = Field(default_factory=TraceSettings)
    sft: SFTSettings
    agent: AgentConfig = Field(default_factory=AgentConfig)

    @model_validator(mode="after")
    def _a_coder_learns_from_pairs(self) -> SFTRunConfig:
        if self.role != "coder":
            return self
        if self.traces.file is None or self.traces.model_fields_set - {"file"}:
            raise ValueError("role coder trains on traces.file alone (pairs written by duet data coder-pairs): set traces.file "
                             "and nothing else under traces; a coder's pairs are not sampled")
        if self.agent.requester.model_fields_set:
            raise ValueError("role coder trains the coder, under agent.coder; agent.requester (and --mode) would not be used")
        return self

    @model_validator(mode="after")
    def _traces_come_from_somewhere(self) -> SFTRunConfig:
        if self.data is None and self.traces.file is None:
            raise ValueError("give data.train to sample traces from, or traces.file to train on")
        return self
