"""A model server that does not answer is named, with what usually starts it, and not waited for."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from qmcp.agentframework.errors import PermanentModelError, TransientModelError
from qmcp.agentframework.llm import call_model, classify_error, resolve_model


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _call(model_string: str) -> None:
    await call_model(
        resolve_model(model_string),
        model_string,
        system=None,
        messages=[{"role": "user", "content": "hi"}],
        settings={},
        timeout_seconds=30,
    )


async def test_ollama_not_running_fails_at_once_and_says_so(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{port}/v1")
    model = f"ollama:model-{uuid.uuid4().hex[:6]}"  # models are cached by string: a fresh one
    started = time.perf_counter()
    with pytest.raises(PermanentModelError) as caught:
        await _call(model)
    assert time.perf_counter() - started < 10  # not retried: qmcp's backoff alone would take longer
    message = str(caught.value)
    assert f"nothing answers at http://127.0.0.1:{port}/v1" in message
    assert "connection refused; is `ollama serve` running?" in message


async def test_an_openai_compatible_endpoint_names_its_variable(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("VLLM_BASE_URL", f"http://localhost:{port}/v1")
    with pytest.raises(PermanentModelError, match=r"VLLM_BASE_URL or the agent's base_url") as caught:
        await _call(f"vllm:model-{uuid.uuid4().hex[:6]}")
    assert f"localhost:{port}/v1" in str(caught.value)


def test_a_remote_connection_error_stays_transient_and_names_the_target():
    from pydantic_ai.exceptions import ModelConnectionError

    error = ModelConnectionError("openai:gpt-4.1", "Connection error.")
    error.__cause__ = ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 443)")
    classified = classify_error(error, "openai:gpt-4.1", base_url="https://api.example.com/v1")
    assert isinstance(classified, TransientModelError)
    assert "(reaching https://api.example.com/v1)" in str(classified)


def test_the_cli_says_it_in_one_line(run_qmcp_env):
    result, seconds = run_qmcp_env(_closed_port())
    assert result.returncode == 1, result.stderr
    assert seconds < 15  # the run itself: refused at once, not retried for 20 s
    assert "is `ollama serve` running?" in result.stderr and "not retried" in result.stderr


@pytest.fixture
def run_qmcp_env(tmp_path):
    import os
    import shutil
    import subprocess

    exe = shutil.which("qmcp")
    assert exe

    def run(port: int) -> tuple[subprocess.CompletedProcess[str], float]:
        env = {
            **os.environ,
            "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
            "OLLAMA_BASE_URL": f"http://127.0.0.1:{port}/v1",
        }
        for args in (
            ["agents", "create", "w", "writer", "--model", "test"],
            ["agents", "topologies", "create", "p", "pipeline", "-a", "w=w"],
        ):
            subprocess.run([exe, *args], env=env, check=True, capture_output=True, timeout=120)
        command = [
            exe,
            "-q",
            "--model",
            "ollama:llama3.2",
            "agents",
            "topologies",
            "run",
            "p",
            "--input-json",
            "{}",
        ]
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        return result, time.perf_counter() - started

    return run
