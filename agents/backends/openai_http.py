"""Any OpenAI-compatible server: vLLM's, llama.cpp's, or a hosted API.

Text level (`chat`) works with every such server and is all a coder needs. Token level (`generate`) sends token ids
as the prompt (part of the completions API) and reads ids back from vLLM's `return_tokens_as_token_ids`; servers
without that extension get their text re-tokenized, which is fine for evaluation but not for training, so training
uses a local or in-process backend.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agents.backends.base import Backend, Generation, GenerationRequest, SamplingParams
from agents.errors import DuetError
from agents.tokenizing import encode_text


class OpenAIBackend(Backend):
    def __init__(self, base_url: str, model: str, tokenizer=None, timeout_s: float = 600.0, api_key: str | None = None, context_window: int | None = None):
        self.base_url = base_url
        self.model = model
        self.name = f"openai:{base_url}#{model}"
        self.tokenizer = tokenizer
        self.context_window = context_window
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=headers)

    @classmethod
    def connect(cls, base_url: str, model: str, tokenizer: str | None = None, api_key: str | None = None, **options) -> OpenAIBackend:
        """Check the server answers and serves `model` before any question is run; find a tokenizer if one is local."""
        try:
            response = httpx.get(f"{base_url}/models", timeout=10.0, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
            response.raise_for_status()
            served = {entry.get("id"): entry for entry in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError) as error:
            raise DuetError(f"cannot reach an OpenAI-compatible server at {base_url} ({type(error).__name__}); start it, or fix the spec openai:BASE_URL#MODEL") from error
        if served and model not in served:
            raise DuetError(f"server {base_url} does not serve {model!r}; it serves: {', '.join(sorted(map(str, served)))}")
        entry = served.get(model, {})
        source = tokenizer or _local_root(entry.get("root")) or model
        return cls(base_url, model, tokenizer=_try_tokenizer(source), api_key=api_key, context_window=entry.get("max_model_len"), **options)

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return list(await asyncio.gather(*(self._complete(request) for request in requests)))

    async def _complete(self, request: GenerationRequest) -> Generation:
        body = {
            "model": self.model,
            "prompt": request.prompt_ids,
            **_sampling(request.params),
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
        }
        choice = (await self._post("/completions", body))["choices"][0]
        text = choice.get("text") or ""
        ids, logprobs = self._tokens(choice, text)
        if request.on_text is not None and text:
            request.on_text(text)
        stop = choice.get("stop_reason") if isinstance(choice.get("stop_reason"), str) else None
        if stop is None and choice.get("finish_reason") == "stop":
            stop = next((s for s in request.params.stop if text.endswith(s)), None)
        reason = "length" if choice.get("finish_reason") == "length" else "stop" if stop else "eos"
        return Generation(token_ids=ids, logprobs=logprobs, text=text, finish_reason=reason, stop_string=stop)

    def _tokens(self, choice: dict, text: str) -> tuple[list[int], list[float]]:
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens") or []
        if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
            return [int(t.split(":", 1)[1]) for t in tokens], [float(x) for x in logprobs.get("token_logprobs") or []]
        if self.tokenizer is None:
            raise DuetError(f"{self.name} returned no token ids and no tokenizer is available; pass one with a local model folder")
        ids = encode_text(self.tokenizer, text)
        return ids, [0.0] * len(ids)

    async def chat(self, messages: list[dict[str, str]], params: SamplingParams) -> str:
        body = {"model": self.model, "messages": messages, **_sampling(params)}
        reply = await self._post("/chat/completions", body)
        return reply["choices"][0]["message"].get("content") or ""

    async def _post(self, path: str, body: dict) -> dict:
        try:
            response = await self._client.post(path, json=body)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPStatusError as error:
            raise DuetError(f"{self.name} answered {error.response.status_code}: {error.response.text[:200]}") from error
        except httpx.HTTPError as error:
            raise DuetError(f"{self.name} failed: {type(error).__name__} {error}") from error

    async def aclose(self) -> None:
        await self._client.aclose()


def _sampling(params: SamplingParams) -> dict:
    body = {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p}
    if params.stop:
        body["stop"] = params.stop
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _local_root(root: str | None) -> str | None:
    return root if root and Path(root).is_dir() else None


def _try_tokenizer(source: str):
    """A tokenizer if one can be had offline; the text-level API needs none."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    except Exception:  # noqa: BLE001 - any failure just means text-only use
        return None
