"""Each provider's key goes only to its own endpoint: a local listener records every header it receives.

The listener speaks just enough of the OpenAI chat API for a real run through the runner, the
model layer and the OpenAI client. Keys of other providers are planted in the environment; they
must never appear in any request, whatever the agent's model, base_url or api_key_env.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from qmcp.agentframework.errors import MissingAPIKeyError, UnknownModelError
from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.runners import LocalRunner, RunConfig

PLANTED = {
    "OPENAI_API_KEY": "sk-openai-planted",
    "ANTHROPIC_API_KEY": "sk-ant-planted",
    "GOOGLE_API_KEY": "google-planted",
    "MISTRAL_API_KEY": "mistral-planted",
}
NO_KEY = "Bearer api-key-not-set"


class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, str]]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        self.requests.append({name.lower(): value for name, value in self.headers.items()})
        body = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "listener",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "heard"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(base URL, the headers of every request received), on 127.0.0.1."""
    requests: list[dict[str, str]] = []
    handler = type("Recorder", (_Recorder,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(  # a short poll: shutdown() waits for one
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


# (provider, AgentConfig fields, environment, the Authorization header expected); "URL" is the listener's.
CASES = [
    ("ollama", {}, {"OLLAMA_BASE_URL": "URL"}, NO_KEY),
    ("ollama", {}, {"OLLAMA_BASE_URL": "URL", "OLLAMA_API_KEY": "ollama-own"}, "Bearer ollama-own"),
    ("vllm", {}, {"VLLM_BASE_URL": "URL"}, NO_KEY),
    ("lmstudio", {}, {"LMSTUDIO_BASE_URL": "URL"}, NO_KEY),
    ("llamacpp", {}, {"LLAMACPP_BASE_URL": "URL", "LLAMACPP_API_KEY": "llama-own"}, "Bearer llama-own"),
    ("openai", {"base_url": "URL"}, {}, NO_KEY),
    ("ollama", {"base_url": "URL"}, {"OLLAMA_API_KEY": "ollama-own"}, NO_KEY),
    ("openai-compatible", {"base_url": "URL"}, {"OPENAI_COMPATIBLE_API_KEY": "compat-own"}, NO_KEY),
    (
        "openai-compatible",
        {},
        {"OPENAI_COMPATIBLE_BASE_URL": "URL", "OPENAI_COMPATIBLE_API_KEY": "compat-own"},
        "Bearer compat-own",
    ),
    (
        "openai-compatible",
        {"base_url": "URL", "api_key_env": "MY_ENDPOINT_KEY"},
        {"MY_ENDPOINT_KEY": "mine"},
        "Bearer mine",
    ),
    (
        "openai",
        {"base_url": "URL", "api_key_env": "MY_ENDPOINT_KEY"},
        {"MY_ENDPOINT_KEY": "mine"},
        "Bearer mine",
    ),
]


@pytest.mark.parametrize(("provider", "config", "environment", "expected"), CASES)
async def test_a_planted_key_reaches_no_foreign_endpoint(
    sqlite_url, listener, monkeypatch, provider, config, environment, expected
):
    url, requests = listener
    for name, value in {**PLANTED, **environment}.items():
        monkeypatch.setenv(name, url if value == "URL" else value)
    fields = {name: url if value == "URL" else value for name, value in config.items()}
    model = f"{provider}:model-{uuid.uuid4().hex[:8]}"  # clients are cached per model string
    agent = AgentType.model_validate({"name": "caller", "config": {"model": model, **fields}})
    topology = Topology(name="keys", topology_type=TopologyType.PIPELINE)
    result = await LocalRunner(db_url=sqlite_url).run(topology, {"only": agent}, {"prompt": "hello"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert result.output and result.output["output"] == "heard"
    assert [request["authorization"] for request in requests] == [expected]
    everything = json.dumps(requests)
    assert not [name for name, key in PLANTED.items() if key in everything]


async def test_api_key_env_must_be_set_and_only_goes_where_it_can(sqlite_url, monkeypatch):
    topology = Topology(name="keys", topology_type=TopologyType.PIPELINE)
    runner = LocalRunner(db_url=sqlite_url)
    unset = AgentType.model_validate(
        {
            "name": "a",
            "config": {
                "model": "openai-compatible:m",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key_env": "QMCP_UNSET_KEY",
            },
        }
    )
    monkeypatch.delenv("QMCP_UNSET_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="needs QMCP_UNSET_KEY \\(its api_key_env\\): set it"):
        await runner.run(topology, {"only": unset}, {"prompt": "x"})
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-planted")
    elsewhere = AgentType.model_validate(
        {"name": "a", "config": {"model": "anthropic:claude-haiku-4-5", "api_key_env": "OPENAI_API_KEY"}}
    )
    with pytest.raises(UnknownModelError, match="cannot take api_key_env"):
        await runner.run(topology, {"only": elsewhere}, {"prompt": "x"})


@pytest.mark.parametrize("same_model", [False, True])
async def test_an_override_never_takes_the_agents_key_to_another_provider(
    sqlite_url, listener, monkeypatch, same_model
):
    """A trusted agent's key variable belongs to its own model: an override to another provider uses
    that provider's own variable; one naming the very same model keeps the agent's endpoint and key."""
    url, requests = listener
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_KEY_TEAM_A", "sk-team-a-secret")
    monkeypatch.setenv("OLLAMA_BASE_URL", url)  # the capture server stands where Ollama listens
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    own = f"openai-compatible:team-{uuid.uuid4().hex[:8]}"
    agent = AgentType.model_validate(
        {"name": "team-a", "config": {"model": own, "base_url": url, "api_key_env": "OPENAI_KEY_TEAM_A"}}
    )
    override = own if same_model else f"ollama:anything-{uuid.uuid4().hex[:8]}"
    topology = Topology(name="keys", topology_type=TopologyType.PIPELINE)
    result = await LocalRunner(db_url=sqlite_url, config=RunConfig(model_override=override)).run(
        topology, {"only": agent}, {"prompt": "hello"}
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    expected = "Bearer sk-team-a-secret" if same_model else NO_KEY
    assert [request["authorization"] for request in requests] == [expected]
    if not same_model:
        assert "sk-team-a-secret" not in json.dumps(requests)
