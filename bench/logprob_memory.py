"""Peak memory of one micro-batch's forward + loss + backward, by how the per-token log-probabilities are computed:
duet's chunked `token_logprobs` against TRL 1.16's own `selective_log_softmax` path and against duet before this
change (the whole-tensor log_softmax, kept here only, as `before`), measured side by side in one run.

The model is random and small in layers but has Qwen2.5's 151,936-token vocabulary, so the output layer dominates as
it does in training a real model on long trajectories: one (B, T, V) fp32 tensor is B x T x 0.57 MB. Each variant
runs in its own process, once at a short length to warm up, then measured: on the CPU, the peak resident memory
(ru_maxrss) minus the resident memory just before the step; on CUDA, torch.cuda.max_memory_allocated minus
memory_allocated before it. Both include the weights' gradients (the same for every variant). The same GRPO loss
(grpo_loss, dapo) follows every variant. TRL's GRPOTrainer 1.16 itself no longer takes the logits at all: it patches
a fused LM head (`add_fused_lm_head`, tiles of the output projection) in; that is measured too, as a last column.

    python bench/logprob_memory.py                              # CPU, fp32, 1 row, 1k, 2k and 4k tokens
    python bench/logprob_memory.py --device cuda --dtype bfloat16 --rows 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOCABULARY = 151936  # Qwen2.5's
PROMPT = 128
VARIANTS = ("before", "trl", "duet", "trl_fused")
TITLES = {"before": "before", "trl": "TRL selective_log_softmax", "duet": "duet", "trl_fused": "TRL fused LM head"}


def before(model, batch, temperature):
    """duet's policy_logprobs and token_logprobs as they were: T + 1 positions of logits, sliced, then every step
    over the whole (B, T, V) tensor: fp32 copy, tempered copy, log-softmax, its exp and their product."""
    import torch

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.logits_to_keep + 1, use_cache=False).logits
    log_probs = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    chosen = log_probs.gather(-1, batch.tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return chosen, entropy


def trl(model, batch, temperature):
    """TRL's _get_per_token_logps_and_entropies before the fused LM head: logits[:, :-1] / temperature, then
    selective_log_softmax and, without gradient, entropy_from_logits (TRL 1.16's selective_log_softmax_and_entropy;
    on CUDA with Triton it runs TRL's fused logprob/entropy kernel)."""
    from trl.trainer.utils import selective_log_softmax_and_entropy

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.logits_to_keep + 1, use_cache=False).logits
    return selective_log_softmax_and_entropy(logits[:, :-1], batch.tokens, entropy_requires_grad=False, temperature=temperature)


def duet(model, batch, temperature):
    from training.batch import policy_logprobs

    return policy_logprobs(model, batch, temperature)


def trl_fused(model, batch, temperature):
    """TRL 1.16 GRPOTrainer's own path: the model patched with add_fused_lm_head (done once, before the warm-up)."""
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    labels[:, : -batch.logits_to_keep] = -100
    outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels, fused_lm_head=True)
    return outputs.log_probs[:, -batch.logits_to_keep :], outputs.entropy[:, -batch.logits_to_keep :]


def random_model(args):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCABULARY, hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=8192,
    )
    return Qwen2ForCausalLM(config).to(device=args.device, dtype=getattr(torch, args.dtype)).train()


def make_batch(rows: int, tokens: int, device: str, seed: int):
    import torch

    from training.batch import TrajectoryBatch

    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCABULARY, (rows, PROMPT + tokens), generator=generator)
    mask = torch.ones(rows, tokens)
    batch = TrajectoryBatch(input_ids, torch.ones_like(input_ids), input_ids[:, PROMPT:], mask, torch.zeros(rows, tokens))
    return batch.to(device)


def step(model, compute, batch, temperature: float):
    """One micro-batch: the log-probabilities, the GRPO loss on them (old = current, as on a first iteration), backward."""
    import torch

    from training.grpo import grpo_loss

    logprobs, entropy = compute(model, batch, temperature)
    advantages = torch.linspace(-1, 1, batch.tokens.shape[0], device=batch.tokens.device)
    loss, _ = grpo_loss(logprobs, logprobs.detach(), advantages, batch.mask, loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2,
                        num_items_in_batch=float(batch.mask.sum()))
    loss.backward()
    return float(logprobs.detach().sum()), float(entropy.detach().sum())


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(args) -> dict:
    """In a process of its own: warm up at a short length, then one measured step."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    model = random_model(args)
    compute = globals()[args.variant]
    if args.variant == "trl_fused":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, temperature=args.temperature, outputs=("log_probs", "entropy"))
    step(model, compute, make_batch(args.rows, 32, args.device, seed=1), args.temperature)
    model.zero_grad(set_to_none=True)
    batch = make_batch(args.rows, args.tokens, args.device, seed=2)
    gc.collect()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = resident_bytes()
    logprob_sum, entropy_sum = step(model, compute, batch, args.temperature)
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_gib": (peak - baseline) / 2**30, "logprob_sum": logprob_sum, "entropy_sum": entropy_sum,
            "grad_norm": float(torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None]).norm())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096], help="trajectory tokens scored (T)")
    parser.add_argument("--rows", type=int, default=1, help="trajectories in the micro-batch (B)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    shared = ["--rows", str(args.rows), "--device", args.device, "--dtype", args.dtype, "--hidden", str(args.hidden),
              "--layers", str(args.layers), "--temperature", str(args.temperature), "--threads", str(args.threads)]
    results: dict[int, dict[str, dict]] = {}
    for tokens in args.lengths:
        for variant in args.variants:
            done = subprocess.run([sys.executable, __file__, "--variant", variant, "--tokens", str(tokens), *shared], env=env, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            results.setdefault(tokens, {})[variant] = json.loads(line[len("RESULT "):]) if line else {"failed": done.stderr.strip().splitlines()[-1:]}
            print(f"  T={tokens} {variant}: {results[tokens][variant]}", file=sys.stderr, flush=True)

    one_logits = 4 * args.rows * VOCABULARY / 2**30  # GiB of one fp32 (B, T, V) tensor per token of T
    print(f"Peak memory of one micro-batch's forward + GRPO loss + backward above the model and inputs, GiB ({args.device}: "
          f"{'max_memory_allocated' if args.device == 'cuda' else 'peak RSS'}), by how the log-probabilities are computed")
    print(f"random Qwen2 shape: {args.layers} layers, hidden {args.hidden}, vocabulary {VOCABULARY}, {args.dtype}; {args.rows} row(s) of "
          f"{PROMPT} prompt + T scored tokens; temperature {args.temperature}")
    names = [TITLES[v] for v in args.variants]
    print(f"{'T':>6} {'(B,T,V) fp32':>13} " + " ".join(f"{n:>{max(len(n), 8)}}" for n in names) + f" {'duet/TRL':>9} {'duet/before':>12}")
    for tokens, row in results.items():
        cells = [f"{row[v]['peak_gib']:{max(len(TITLES[v]), 8)}.2f}" if "peak_gib" in row[v] else f"{'failed':>{max(len(TITLES[v]), 8)}}" for v in args.variants]
        ratio = {other: row["duet"]["peak_gib"] / row[other]["peak_gib"] if all("peak_gib" in row.get(k, {}) for k in ("duet", other)) else None for other in ("trl", "before")}
        print(f"{tokens:>6} {one_logits * tokens:13.2f} " + " ".join(cells) + "".join(f" {r:{w}.2f}x" if r else f" {'-':>{w + 1}}" for r, w in ((ratio["trl"], 8), (ratio["before"], 11))))
    print("agreement with before (same model, same batch): relative difference of sum log p, sum entropy, weights' gradient norm")
    for tokens, row in results.items():
        if "logprob_sum" not in row.get("before", {}):
            continue
        base = row["before"]
        gaps = {v: [abs(row[v][k] - base[k]) / abs(base[k]) for k in ("logprob_sum", "entropy_sum", "grad_norm")] for v in args.variants if v != "before" and "logprob_sum" in row[v]}
        print(f"{tokens:>6} " + "  ".join(f"{TITLES[v]}: " + ", ".join(f"{g:.2e}" for g in gap) for v, gap in gaps.items()))


if __name__ == "__main__":
    main()
