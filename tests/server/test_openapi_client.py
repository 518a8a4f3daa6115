"""A client generated from `/openapi.json` by openapi-python-client (nobody here wrote it) drives the
server: it defines a team, starts a run, reads the execution, its steps and its events, and parses the
errors as the document's `Problem`. A document that lied (FastAPI's `{detail: [...]}` 422, undocumented
404s, a JSON event stream) makes the generated client crash or return `parsed=None`."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from serving import BASE_URL
from team import AGENTS

TOKEN = "client-token-0123456789abcdef0123456789"
PACKAGE = "qmcp_generated_client"

pytestmark = pytest.mark.slow  # runs the generator, a process


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Any]:
    """generated(document) -> the client package openapi-python-client made from `document`, imported."""
    generator = os.environ.get("QMCP_OPENAPI_GENERATOR") or shutil.which("openapi-python-client")
    if generator is None:
        missing = (
            "openapi-python-client is not installed: pipx install 'openapi-python-client>=0.29,<0.30' "
            "(its own environment: it pins typer below qmcp's CLI), or set QMCP_OPENAPI_GENERATOR"
        )
        if os.environ.get("CI"):
            pytest.fail(missing)  # .ci/run installs it: CI never skips this test
        pytest.skip(missing)

    def generate(document: dict[str, Any]) -> ModuleType:
        path = tmp_path / "openapi.json"
        path.write_text(json.dumps(document))
        done = subprocess.run(
            [
                generator,
                "generate",
                "--path",
                str(path),
                "--output-path",
                str(tmp_path / PACKAGE),
                "--meta",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
        sys.path.insert(0, str(tmp_path))
        return importlib.import_module(PACKAGE)

    yield generate
    sys.path.remove(str(tmp_path)) if str(tmp_path) in sys.path else None
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def _api(operation: str) -> Any:
    """The generated module of `operation` (openapi-python-client groups operations by tag)."""
    for tag in ("agents", "topologies", "executions", "human", "tools", "server"):
        try:
            return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")
        except ModuleNotFoundError:
            continue
    raise AssertionError(f"no generated module for {operation}")


async def test_a_generated_client_runs_a_topology_and_parses_every_answer(start_app, db_url, generated):
    server = await start_app(db_url, token=TOKEN)
    document = (await server.client.get("/openapi.json")).json()
    client_package = generated(document)
    models = importlib.import_module(f"{PACKAGE}.models")
    client = client_package.AuthenticatedClient(
        base_url=BASE_URL, token=TOKEN, httpx_args={"transport": server.transport()}
    )
    async with client:
        for agent in AGENTS[:2]:
            created = await _api("post_agent").asyncio_detailed(
                client=client, body=models.AgentBody.from_dict(agent)
            )
            assert created.status_code == 201 and isinstance(created.parsed, models.AgentOut), created
            assert created.parsed.name == agent["name"]
        team = {
            "name": "plan-write",
            "topology_type": "pipeline",
            "agents": {"plan": "planner-a", "write": "writer-a"},
        }
        topology = await _api("post_topology").asyncio(
            client=client, body=models.TopologyBody.from_dict(team)
        )
        assert isinstance(topology, models.TopologyDefinitionOut) and topology.topology_type == "pipeline"
        listed = await _api("get_topologies").asyncio(client=client)
        assert (
            isinstance(listed, models.TopologyListOut) and listed.topologies[0].agents["plan"] == "planner-a"
        )

        body = models.RunBody.from_dict({"input": {"prompt": "Why is the sky blue?"}})
        accepted = await _api("run_topology").asyncio(name="plan-write", client=client, body=body)
        assert isinstance(accepted, models.RunAccepted), accepted
        execution = None
        for _ in range(600):  # at most a minute: the run goes on in the server meanwhile
            execution = await _api("get_execution").asyncio(execution_id=accepted.execution_id, client=client)
            assert isinstance(execution, models.ExecutionOut), execution
            if execution.status not in ("pending", "running"):
                break
            await asyncio.sleep(0.1)
        assert execution is not None and execution.status == "completed", execution
        assert execution.output is not None and execution.input_tokens > 0
        steps = await _api("get_steps").asyncio(execution_id=accepted.execution_id, client=client)
        assert isinstance(steps, models.StepListOut) and [s.slot for s in steps.steps] == ["plan", "write"]

        # The event stream is text (the run has ended, so it ends too); the generated client reads it whole.
        stream = await _api("stream_events").asyncio_detailed(
            execution_id=accepted.execution_id, client=client
        )
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line[len("data: ") :])
            for line in stream.parsed.splitlines()
            if line.startswith("data: ")
        ]
        assert events[0]["event"] == "status" and events[-1]["event"] == "end"
        assert {e["key"] for e in events if e["event"] == "step"} >= {"pipeline/0:plan", "pipeline/1:write"}

        # Errors parse as the document's Problem: an unknown execution (404), a body that is not one (422),
        # a name taken (409).
        missing = await _api("get_execution").asyncio_detailed(
            execution_id="00000000-0000-0000-0000-000000000000", client=client
        )
        assert missing.status_code == 404 and isinstance(missing.parsed, models.Problem), missing
        assert missing.parsed.type_ == "urn:qmcp:problem:not-found" and "not found" in missing.parsed.detail
        bad_body = models.AgentBody.from_dict(
            {"name": 5}
        )  # the generated model does not check; the server does
        bad = await _api("post_agent").asyncio_detailed(client=client, body=bad_body)
        assert bad.status_code == 422 and isinstance(bad.parsed, models.Problem), bad
        assert bad.parsed.errors[0].loc == ["body", "name"] and bad.parsed.detail.startswith("body.name: ")
        taken = await _api("post_agent").asyncio_detailed(
            client=client, body=models.AgentBody.from_dict(AGENTS[0])
        )
        assert taken.status_code == 409 and isinstance(taken.parsed, models.Problem)
        assert taken.parsed.type_ == "urn:qmcp:problem:conflict"
