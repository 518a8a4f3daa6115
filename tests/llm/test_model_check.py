"""Model strings checked when an agent is defined: refusals with suggestions of the same provider."""

from __future__ import annotations

import importlib.util

import pytest

from qmcp.agentframework.errors import ModelNotInstalledError, UnknownModelError
from qmcp.agentframework.llm import check_model_string, register_model, resolve_model, unregister_model


@pytest.mark.parametrize(
    "model",
    [
        "test",
        "scripted:anything",
        "local:smollm2",
        "local:/models/x.gguf",
        "ollama:llama3.2",
        "vllm:my-model",
        "openai-compatible:x",
        "anthropic:claude-sonnet-4-20250514",
        "claude-sonnet-4-20250514",
        "openai:gpt-4.1",
        "gpt-4.1",
        "openrouter:meta/llama",  # a provider pydantic-ai builds without listing its models
    ],
)
def test_valid_models_pass_without_a_note(model):
    assert check_model_string(model) is None


def test_a_registered_model_passes():
    register_model("my-offline", lambda role: resolve_model("test"))
    try:
        assert check_model_string("my-offline") is None
    finally:
        unregister_model("my-offline")


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("gpt5", "unknown model 'gpt5': did you mean openai:gpt-5"),
        ("smollm2", "did you mean local:smollm2"),
        (
            "opnai:gpt-4.1",
            "unknown model 'opnai:gpt-4.1': no provider is called 'opnai'; did you mean openai:gpt-4.1",
        ),
        ("nonsense:x", "no provider is called 'nonsense'"),
        ("openai:", "has no valid name"),
        ("openai:gpt 4", "has no valid name"),
    ],
)
def test_impossible_models_are_refused_with_suggestions(model, says):
    with pytest.raises(UnknownModelError) as caught:
        check_model_string(model)
    assert says in str(caught.value)
    assert "snowflake" not in str(caught.value)  # never another provider's lookalike


def test_an_unlisted_name_of_a_known_provider_is_kept_with_a_note():
    note = check_model_string("claude-sonet")
    assert note is not None and note.startswith("anthropic lists no model 'claude-sonet'")
    assert "anthropic:claude-sonnet" in note
    assert "openai:gpt-5" in (check_model_string("openai:gpt5") or "")


@pytest.mark.skipif(importlib.util.find_spec("groq") is not None, reason="the groq extra is installed")
def test_a_provider_without_its_package_says_what_to_install():
    with pytest.raises(ModelNotInstalledError, match=r'pip install "pydantic-ai-slim\[groq\]"'):
        check_model_string("groq:llama-3.3-70b-versatile")


def test_resolving_an_unknown_provider_suggests_the_same_provider():
    with pytest.raises(UnknownModelError, match=r"did you mean openai:gpt-4\.1"):
        resolve_model("opnai:gpt-4.1")
