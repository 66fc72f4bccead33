"""A randomly initialised model of a published model's shape, for measuring speed and memory where its weights
cannot be downloaded (a GPU machine without internet). The vocabulary is the given tokenizer's (the embedded model's,
49,152 tokens), so every sampled id decodes; the real models' larger vocabularies make the output layer bigger than
here, which the figures measured with it leave out.

    python bench/random_model.py qwen2.5-1.5b /tmp/qwen-shape --tokenizer PATH   # PATH: a folder with tokenizer.json
"""

from __future__ import annotations

import argparse

SHAPES = {
    "smollm2-135m": dict(architecture="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0),
    "qwen2.5-1.5b": dict(architecture="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0),
    "qwen2.5-7b": dict(architecture="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=1000000.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    shape = dict(SHAPES[args.shape])
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[shape.pop("architecture")]
    config = config_class(
        vocab_size=len(tokenizer), max_position_embeddings=32768, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape,
    )
    model = model_class(config)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"{args.shape}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters in {args.out}")


if __name__ == "__main__":
    main()
