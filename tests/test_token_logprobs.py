"""token_logprobs: the same numbers and gradient as the plain log_softmax over the whole (B, T, V) tensor, while no
more than one chunk of positions is ever expanded to fp32 over the vocabulary, nothing but the logits themselves is
kept for backward, and the entropy carries no gradient."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from training.grpo import token_logprobs

B, T, V = 3, 11, 503


def plain(logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """What token_logprobs computed before it was chunked: every step over the whole (B, T, V) tensor."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)


def inputs(dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=generator) * 4).to(dtype)
    tokens = torch.randint(0, V, (B, T), generator=generator)
    weights = torch.randn(B, T, generator=generator)  # a loss that weighs every position differently
    return logits, tokens, weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_size", [1, 4, 256])
def test_values_and_gradient_equal_the_plain_log_softmax(dtype, temperature, chunk_size):
    logits, tokens, weights = inputs(dtype)
    expected_leaf, leaf = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    expected, expected_entropy = plain(expected_leaf, tokens, temperature)
    (expected * weights).sum().backward()
    chosen, entropy = token_logprobs(leaf, tokens, temperature, chunk_size=chunk_size)
    (chosen * weights).sum().backward()
    assert chosen.dtype == entropy.dtype == torch.float32
    assert torch.allclose(chosen, expected, atol=1e-6, rtol=1e-6)
    assert torch.allclose(entropy, expected_entropy.detach(), atol=1e-5, rtol=1e-6)
    assert leaf.grad.dtype == dtype
    tolerance = (1e-6 if dtype == torch.float32 else 2 ** -8) * float(expected_leaf.grad.abs().max())  # rounding of the dtype
    assert torch.allclose(leaf.grad.float(), expected_leaf.grad.float(), atol=tolerance, rtol=0)


def test_a_slice_of_the_logits_works_and_only_it_gets_gradient():
    logits, tokens, weights = inputs(torch.float32)
    wide = torch.cat([logits, torch.randn(B, 1, V)], dim=1).requires_grad_(True)  # as a model returns T + 1 positions
    chosen, _ = token_logprobs(wide[:, :-1], tokens, 0.9, chunk_size=4)
    (chosen * weights).sum().backward()
    expected = logits.clone().requires_grad_(True)
    (plain(expected, tokens, 0.9)[0] * weights).sum().backward()
    assert torch.allclose(wide.grad[:, :-1], expected.grad, atol=1e-6 * float(expected.grad.abs().max()))
    assert torch.all(wide.grad[:, -1] == 0)


def test_the_entropy_is_a_statistic_without_gradient():
    logits, tokens, _ = inputs(torch.float32)
    chosen, entropy = token_logprobs(logits.requires_grad_(True), tokens, 1.0)
    assert chosen.requires_grad and not entropy.requires_grad


class LargestTensor(TorchDispatchMode):
    """Records the largest new tensor (in elements) any operation makes, apart from those of a shape in `allowed`;
    views and in-place results (which share an input's memory) make nothing new."""

    def __init__(self, allowed: tuple[torch.Size, ...] = ()):
        super().__init__()
        self.allowed, self.largest = allowed, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.shape not in self.allowed and tensor.untyped_storage().data_ptr() not in given:
                self.largest = max(self.largest, tensor.numel())
        return out


def test_no_more_than_one_chunk_is_expanded_to_the_vocabulary_in_forward_or_backward():
    """The logits (B, T, V) and, in backward, their gradient are the only tensors of that size; every other one is
    at most chunk_size x V (before: the fp32 copy, the tempered copy, the log-softmax, its exp and their product)."""
    logits, tokens, weights = inputs(torch.bfloat16)
    logits.requires_grad_(True)
    chunk = 4
    with LargestTensor() as forward:
        chosen, _ = token_logprobs(logits, tokens, 0.7, chunk_size=chunk)
    with LargestTensor(allowed=(logits.shape,)) as backward:  # the gradient of the logits, in their own dtype
        (chosen * weights).sum().backward()
    assert forward.largest <= chunk * V and backward.largest <= chunk * V, (forward.largest, backward.largest)
    assert logits.grad.dtype == torch.bfloat16


def test_nothing_but_the_logits_themselves_is_kept_for_backward():
    logits, tokens, _ = inputs(torch.float32)
    logits.requires_grad_(True)
    kept = []

    def pack(tensor):
        shares_the_logits = tensor.untyped_storage().data_ptr() == logits.untyped_storage().data_ptr()
        kept.append(0 if shares_the_logits else tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        token_logprobs(logits, tokens, 0.7)
    assert sum(kept) <= tokens.numel() * 8  # the token ids: no (B, T, V) tensor of its own
