"""GRPO's math against TRL 1.16's own code on identical inputs, and the properties the trainer relies on.

TRL computes the loss in `GRPOTrainer._compute_loss(self, model, inputs)`; it is called here unbound, with a stand-in
`self` that holds exactly the settings it reads and returns our log-probabilities for its forward pass. Advantages
are computed inside `_generate_and_score_completions`, which runs on a real (tiny) TRL trainer whose generation is
replaced by fixed completions, so only its reward and advantage code runs.
"""

import types
from collections import defaultdict

import pytest
import torch

from training.grpo import equal_reward_groups, group_advantages, grpo_loss, kl_k3

trl = pytest.importorskip("trl", reason="TRL is a test dependency (the dev extra)")

B, T = 6, 7


def inputs_for_the_loss(seed: int):
    generator = torch.Generator().manual_seed(seed)
    logprobs = (torch.randn(B, T, generator=generator) * 0.3 - 1.0).requires_grad_(True)
    old = logprobs.detach() + 0.15 * torch.randn(B, T, generator=generator)
    ref = logprobs.detach() + 0.1 * torch.randn(B, T, generator=generator)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 6:] = 0
    mask[3, :2] = 0  # a prompt-like masked start, as with inserted results in the middle of a trajectory
    advantages = torch.randn(B, generator=generator)
    return logprobs, old, ref, mask, advantages


class OneProcess:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x

    def gather_for_metrics(self, x):
        return x


def trl_loss(loss_type, logprobs, old, ref, mask, advantages, beta, epsilon, epsilon_high, accumulation):
    stand_in = types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logprobs, torch.zeros(B, T), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, loss_type=loss_type, epsilon_low=epsilon, epsilon_high=epsilon_high, use_vllm=False,
        vllm_importance_sampling_correction=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=accumulation, max_completion_length=T, accelerator=OneProcess(),
        _entropy_bonus_enabled=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        args=types.SimpleNamespace(use_bias_correction_kl=True, delta=None, steps_per_generation=accumulation),
    )
    batch = {
        "prompt_ids": torch.ones(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask, "advantages": advantages,
        "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum() * accumulation,
    }
    return trl.GRPOTrainer._compute_loss(stand_in, None, batch), stand_in._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(("beta", "epsilon_high", "accumulation"), [(0.0, 0.2, 1), (0.04, 0.28, 1), (0.04, 0.28, 2)])
def test_loss_and_gradient_equal_trl(loss_type, beta, epsilon_high, accumulation):
    logprobs, old, ref, mask, advantages = inputs_for_the_loss(seed=7)
    expected, metrics = trl_loss(loss_type, logprobs, old, ref, mask, advantages, beta, 0.2, epsilon_high, accumulation)
    (expected_grad,) = torch.autograd.grad(expected, logprobs)
    ours, stats = grpo_loss(
        logprobs, old, advantages, mask, loss_type=loss_type, epsilon_low=0.2, epsilon_high=epsilon_high, beta=beta,
        ref_logprobs=ref, num_items_in_batch=float(mask.sum() * accumulation), max_completion_length=T,
        gradient_accumulation_steps=accumulation,
    )
    (our_grad,) = torch.autograd.grad(ours, logprobs)
    assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-5)
    assert torch.allclose(our_grad, expected_grad, atol=1e-7, rtol=1e-5)
    assert float(stats["clip_ratio/low"]) == pytest.approx(metrics["clip_ratio/low_mean"][0], abs=1e-6)
    assert float(stats["clip_ratio/high"]) == pytest.approx(metrics["clip_ratio/high_mean"][0], abs=1e-6)
    if beta:
        assert float(stats["kl"].detach()) == pytest.approx(metrics["kl"][0], rel=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_masked_tokens_get_exactly_zero_gradient(loss_type):
    logprobs, old, ref, mask, advantages = inputs_for_the_loss(seed=3)
    logprobs.data[mask == 0] = float("nan")  # whatever a masked position holds must not reach the gradient...
    ref[mask == 0] = 1e4  # ...nor the KL term
    loss, _ = grpo_loss(logprobs, old, advantages, mask, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.2, beta=0.1,
                        ref_logprobs=ref, num_items_in_batch=float(mask.sum()), max_completion_length=T)
    (gradient,) = torch.autograd.grad(loss, logprobs)
    assert torch.isfinite(loss) and torch.all(gradient[mask == 0] == 0)
    assert torch.all(torch.isfinite(gradient[mask == 1])) and torch.any(gradient[mask == 1] != 0)


def test_advantages_equal_trl_for_each_scaling(tiny_dir):
    from datasets import Dataset

    group = 4
    rewards = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.5, 0.0, 3.0, 1.0]
    for scale in ("group", "batch", "none"):
        config = trl.GRPOConfig(
            output_dir="/tmp/duet-trl-advantages", use_cpu=True, bf16=False, report_to="none", num_generations=group,
            per_device_train_batch_size=len(rewards), max_completion_length=4, gradient_checkpointing=False, scale_rewards=scale,
        )
        trainer = trl.GRPOTrainer(model=str(tiny_dir), reward_funcs=lambda completions, **_: rewards[: len(completions)], args=config,
                                  train_dataset=Dataset.from_dict({"prompt": ["a", "b", "c"]}))
        trainer.model.train()
        trainer._generate = lambda prompts: ([[1, 7]] * len(prompts), [[5, 6, 2]] * len(prompts), None, ["x"] * len(prompts), None, {}, None, [[] for _ in prompts])
        expected = trainer._generate_and_score_completions([{"prompt": p} for p in "abc" for _ in range(group)])["advantages"]
        ours = group_advantages(torch.tensor(rewards), group, scale)
        assert torch.allclose(ours, expected, atol=1e-6), scale


def test_groups_whose_rewards_are_all_equal_are_found():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    assert equal_reward_groups(rewards, 3).tolist() == [False, True, True]
    assert torch.all(group_advantages(rewards, 3, "group")[3:] == 0) and torch.any(group_advantages(rewards, 3, "group")[:3] != 0)


def test_k3_is_zero_for_equal_policies_and_positive_otherwise():
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.all(kl_k3(logprobs, logprobs) == 0)
    assert torch.all(kl_k3(logprobs, logprobs + torch.tensor([0.3, -0.2, 1.0])) > 0)


def test_sampler_correction_truncates_or_masks_per_token_or_per_sequence():
    import math

    from training.grpo import sampler_correction

    old = torch.tensor([[-1.0, -2.0, float("nan")]])
    sampled = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    up, down = math.exp(0.5), math.exp(-1.0)
    assert sampler_correction(old, sampled, mask, "token_truncate", None, 1.5).tolist()[0][:2] == pytest.approx([1.5, down])
    assert sampler_correction(old, sampled, mask, "token_mask", None, 1.5).tolist()[0][:2] == pytest.approx([0.0, down])
    assert sampler_correction(old, sampled, mask, "token_mask", 0.5, None).tolist()[0][:2] == pytest.approx([up, 0.0])
    assert sampler_correction(old, sampled, mask, "sequence_truncate", 0.7, 3.0).tolist()[0] == pytest.approx([0.7])
    assert sampler_correction(old, sampled, mask, "sequence_mask", 0.7, 3.0).tolist() == [[0.0]]
    assert sampler_correction(old, sampled, mask, "sequence_mask", None, 3.0).tolist()[0] == pytest.approx([math.exp(-0.5)])


def test_importance_weights_scale_the_surrogate_but_not_the_kl():
    logprobs = torch.tensor([[-1.0, -0.5]], requires_grad=True)
    old = torch.tensor([[-1.1, -0.4]])
    ref = torch.tensor([[-1.2, -0.7]])
    mask = torch.ones(1, 2)
    advantages = torch.tensor([0.8])
    weights = torch.tensor([[0.5, 2.0]])
    common = dict(loss_type="bnpo", epsilon_low=0.2, epsilon_high=0.2, beta=0.1, ref_logprobs=ref, use_bias_correction_kl=False)
    weighted, _ = grpo_loss(logprobs, old, advantages, mask, importance_weights=weights, **common)
    ratio = torch.exp(logprobs - old)
    surrogate = -torch.min(ratio * 0.8, ratio.clamp(0.8, 1.2) * 0.8)
    kl = torch.exp(ref - logprobs) - (ref - logprobs) - 1
    assert weighted.item() == pytest.approx((surrogate * weights + 0.1 * kl).mean().item())
