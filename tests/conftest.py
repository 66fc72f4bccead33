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


@pytest.fixture(scope="session")
def tokenizer_dir(request) -> Path:
    """The embedded model's tokenizer, for the tiny models. DUET_TEST_TOKENIZER names a folder holding only it, for a
    GPU machine that cannot carry the model itself (bench/gpu_check.sh)."""
    carried = os.environ.get("DUET_TEST_TOKENIZER")
    return Path(carried) if carried else request.getfixturevalue("embedded_dir")


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
def tiny_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return build_tiny_model(tokenizer_dir, tmp_path_factory.mktemp("tiny-a"), seed=1, hidden=64)


@pytest.fixture(scope="session")
def other_tiny_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return build_tiny_model(tokenizer_dir, tmp_path_factory.mktemp("tiny-b"), seed=2, hidden=96)


@pytest.fixture(scope="session")
def foreign_tiny_dir(tmp_path_factory) -> Path:
    """A tiny random model with a tokenizer of its own (a byte-level BPE of 300-odd tokens trained on a few protocol
    strings, with its own chat template and end of turn), so its token ids mean other tokens than the embedded
    model's: a teacher from another model family."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<|start|>", "<|end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["I need the sum.\n<request>add 2 and 3</request>\n<result>\n5\n</result>\nSo \\boxed{5}.",
                             "What is 12 + 30? The answer is \\boxed{42}."] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<pad>")
    tokenizer.chat_template = ("{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}")
    target = tmp_path_factory.mktemp("tiny-foreign")
    torch.manual_seed(4)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=8192, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=0.3)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def vllm_tiny_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """Heads of size 64: vLLM's CPU attention supports only the usual head sizes (not tiny_dir's 16)."""
    return build_tiny_model(tokenizer_dir, tmp_path_factory.mktemp("tiny-vllm"), seed=3, hidden=256)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_backend(tiny_dir):
    from agents.backends.transformers_local import TransformersBackend

    return TransformersBackend.load(str(tiny_dir), device=TEST_DEVICE)
