"""Shared fixtures: the embedded model (converted once into a repo-local cache), tiny random-weight models built
offline from its tokenizer, and a scripted backend for driving the graph down exact paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DUET_CACHE_DIR", str(REPO / ".duet-cache"))
# The backend tests also run on a GPU machine: DUET_TEST_DEVICE=cuda pytest tests/test_transformers_backend.py
TEST_DEVICE = os.environ.get("DUET_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from agents.models import embedded_model_dir

    return embedded_model_dir()


def build_tiny_model(source: Path, target: Path, seed: int, hidden: int) -> Path:
    """A two-layer Llama with random weights and the embedded model's tokenizer: loads and generates in milliseconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.3,  # large random weights make output depend on context instead of repeating one token
    )
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_dir(embedded_dir, tmp_path_factory) -> Path:
    return build_tiny_model(embedded_dir, tmp_path_factory.mktemp("tiny-a"), seed=1, hidden=64)


@pytest.fixture(scope="session")
def other_tiny_dir(embedded_dir, tmp_path_factory) -> Path:
    return build_tiny_model(embedded_dir, tmp_path_factory.mktemp("tiny-b"), seed=2, hidden=96)


@pytest.fixture(scope="session")
def vllm_tiny_dir(embedded_dir, tmp_path_factory) -> Path:
    """Heads of size 64: vLLM's CPU attention supports only the usual head sizes (not tiny_dir's 16)."""
    return build_tiny_model(embedded_dir, tmp_path_factory.mktemp("tiny-vllm"), seed=3, hidden=256)


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


@pytest.fixture(scope="session")
def tiny_backend(tiny_dir):
    from agents.backends.transformers_local import TransformersBackend

    return TransformersBackend.load(str(tiny_dir), device=TEST_DEVICE)
