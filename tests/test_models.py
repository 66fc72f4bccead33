"""Model specs: every accepted form parses, every bad one fails with a one-line message naming the accepted forms."""

import os

import pytest

from agents.errors import DuetError
from agents.models import SPEC_FORMS, embedded_model_dir, load_backend, parse_spec


def test_accepted_forms(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert parse_spec("default").kind == "default"
    assert parse_spec(str(tmp_path)).kind == "local"
    assert parse_spec("Qwen/Qwen2.5-7B-Instruct").kind == "hub"
    served = parse_spec("openai:http://127.0.0.1:8000/v1#my-model")
    assert (served.kind, served.location, served.served_name) == ("openai", "http://127.0.0.1:8000/v1", "my-model")
    assert parse_spec("vllm:Qwen/Qwen2.5-7B-Instruct").kind == "vllm"


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("", SPEC_FORMS),
        ("no such thing!", SPEC_FORMS),
        ("./missing/folder", SPEC_FORMS),
        ("openai:localhost:8000", "openai:BASE_URL#MODEL"),
        ("openai:http://127.0.0.1:8000/v1", "openai:BASE_URL#MODEL"),
        ("vllm:", "vllm:PATH_OR_ID"),
    ],
)
def test_bad_specs_name_the_accepted_forms(spec, hint):
    with pytest.raises(DuetError) as error:
        parse_spec(spec)
    assert hint in str(error.value) and "\n" not in str(error.value)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(DuetError, match="config.json"):
        parse_spec(str(tmp_path))


def test_unreachable_server_is_a_one_line_error():
    with pytest.raises(DuetError, match="cannot reach") as error:
        load_backend("openai:http://127.0.0.1:9/v1#nothing")
    assert "\n" not in str(error.value)


def test_uncached_hub_id_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DuetError, match="cannot load model") as error:
        load_backend("duet-tests/definitely-not-a-model")
    assert "\n" not in str(error.value)


def test_embedded_model_is_converted_once_and_reused(embedded_dir):
    weights = embedded_dir / "model.safetensors"
    before = os.stat(weights).st_mtime_ns
    assert embedded_model_dir() == embedded_dir
    assert os.stat(weights).st_mtime_ns == before
    assert {"config.json", "tokenizer.json"} <= {p.name for p in embedded_dir.iterdir()}
    assert "quantization_config" not in (embedded_dir / "config.json").read_text()


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    from agents.models import cache_dir

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
