"""The caller policy: what a remote caller (HTTP, console, MCP) may decide about a run, and that the
operator's choices win. Every door is driven in-process over the same server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from qmcp.agentframework.errors import InvalidConfigError, PermissionDeniedError
from qmcp.agentframework.models import AgentRole, AgentType, Topology, TopologyType
from qmcp.agentframework.runners import FieldScope, RunConfig, RunnerRegistry, field_scope, trust
from qmcp.agentframework.store import Database
from qmcp.app import (
    RUN_OPTION_POLICY,
    Caller,
    CallerPolicy,
    Door,
    Permission,
    checked_run_options,
    runner_option_names,
)
from qmcp.server import ServerOptions, create_app


@pytest.fixture
def store_team() -> Callable[..., Any]:
    """`await store_team(db_url, model=..., name=...)`: a two-stage pipeline whose agents run on `model`."""
    return _store_team


async def _store_team(db_url: str, *, model: str = "test", name: str = "review") -> None:
    agents = {
        "plan": AgentType(name="planner", role=AgentRole.PLANNER, config={"model": model}),
        "write": AgentType(name="writer", role=AgentRole.SPECIALIST, config={"model": model}),
    }
    async with Database(db_url) as db:
        await db.save_team(Topology(name=name, topology_type=TopologyType.PIPELINE, config={}), agents)


Served = tuple[Any, httpx.AsyncClient]


@pytest.fixture
def serve() -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    """`async with serve(db_url, **ServerOptions fields) as (app, client)`."""

    @contextlib.asynccontextmanager
    async def serving(db_url: str, **options: Any) -> AsyncIterator[Served]:
        app = create_app(ServerOptions.from_settings(db_url=db_url, resume_interrupted=False, **options))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:3333", timeout=30
            ) as client,
        ):
            yield app, client

    return serving


OPERATOR_ONLY = sorted(
    name for name, permission in RUN_OPTION_POLICY.items() if permission is Permission.OPERATOR
)
OPERATOR_VALUES: dict[str, Any] = {
    "output_dir": "/tmp/planted",
    "environment": "kubernetes",
    "rate_limits": {"test": {"rpm": 1}},
    "log_level": "DEBUG",
    "freeze_heap_above": 1,
    "trace_enabled": False,
    "metrics_enabled": False,
}


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def test_every_run_option_has_a_row_in_the_policy() -> None:
    options = set(RunConfig.model_fields)
    for name in RunnerRegistry.list():
        options |= set(runner_option_names(RunnerRegistry.get(name)))
    assert options <= set(RUN_OPTION_POLICY), (
        f"classify in RUN_OPTION_POLICY: {options - set(RUN_OPTION_POLICY)}"
    )
    assert set(OPERATOR_VALUES) == set(OPERATOR_ONLY)
    process = {name for name in RunConfig.model_fields if field_scope(name) is FieldScope.PROCESS}
    assert all(RUN_OPTION_POLICY[name] is Permission.OPERATOR for name in process), (
        "process settings are the operator's"
    )


def test_the_operator_decides_everything_a_client_only_what_the_table_allows() -> None:
    policy = CallerPolicy(allowed_models=frozenset({"test"}), max_cost_usd=2.0)
    operator = checked_run_options(
        Caller.operator(Door.CLI),
        policy,
        "metaflow",
        {"output_dir": "/x", "model_override": "openai:gpt-4.1"},
    )
    assert (
        operator.runner_options == {"output_dir": "/x"} and operator.config.model_override == "openai:gpt-4.1"
    )
    client = Caller.client(Door.HTTP)
    checked = checked_run_options(client, policy, "async", {"max_concurrent": 4, "model_override": "test"})
    assert checked.runner_options == {"max_concurrent": 4}
    assert checked.config.max_cost_usd == 2.0, "without a budget a client gets the server's"
    with pytest.raises(PermissionDeniedError, match=r"config\.max_cost_usd is at most 2"):
        checked_run_options(client, policy, "local", {"max_cost_usd": 5})
    with pytest.raises(PermissionDeniedError, match=r"config\.max_concurrent is at most 16"):
        checked_run_options(client, policy, "async", {"max_concurrent": 17})
    with pytest.raises(InvalidConfigError, match=r"config\.bogus: unknown option"):
        checked_run_options(client, policy, "local", {"bogus": 1})
    with pytest.raises(InvalidConfigError, match=r"config\.max_retries"):
        checked_run_options(client, policy, "local", {"max_retries": -1})
    with pytest.raises(PermissionDeniedError, match="runner 'metaflow' is not offered"):
        checked_run_options(client, CallerPolicy(runners=frozenset({"local"})), "metaflow", {})


@pytest.mark.parametrize("field", OPERATOR_ONLY)
async def test_operator_only_fields_are_refused_over_http_console_and_mcp(
    field: str, sqlite_url: str, serve: Any, store_team: Any, tmp_path: Path
) -> None:
    from mcp import Client

    from qmcp.server._mcp import mcp_server

    await store_team(sqlite_url)
    planted = tmp_path / "client-dir"
    value = str(planted) if field == "output_dir" else OPERATOR_VALUES[field]
    runner = "metaflow" if field in ("output_dir", "environment") else "local"
    expected = f"config.{field} is set by the server's operator, not by a client; leave it out"
    async with serve(sqlite_url) as (app, client):
        answer = await client.post(
            "/v1/topologies/review/run",
            json={"input": {"prompt": "hi"}, "runner": runner, "config": {field: value}},
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["detail"] == expected
        async with Client(mcp_server(app.state.qmcp.runs, "test")) as session:
            result = await session.call_tool(
                "run_topology",
                {"name": "review", "input": {"prompt": "hi"}, "runner": runner, "config": {field: value}},
            )
        assert result.is_error and expected in result.content[0].text
        assert (await client.get("/v1/executions")).json()["total"] == 0
    assert not planted.exists()
    async with Database(sqlite_url) as db:
        assert await db.count_executions() == 0


async def test_the_console_form_follows_the_policy(sqlite_url: str, serve: Any, store_team: Any) -> None:
    await store_team(sqlite_url)
    async with serve(sqlite_url) as (_app, client):
        page = await client.post(
            "/topologies/review/run",
            data={"input": '{"prompt": "hi"}', "runner": "local", "model": "openai:gpt-4.1"},
            headers={"Origin": "http://127.0.0.1:3333"},
        )
        assert page.status_code == 400
        assert "is not allowed on this server" in page.text and "--allow-model" in page.text
        page = await client.post(
            "/topologies/review/run",
            data={"input": '{"prompt": "hi"}', "runner": "local", "model": "local:/etc/shadow"},
            headers={"Origin": "http://127.0.0.1:3333"},
        )
        assert page.status_code == 400 and "local model files are chosen by the server" in page.text
        assert (await client.get("/v1/executions")).json()["total"] == 0


async def _finished(client: Any, execution_id: str) -> dict[str, Any]:
    for _ in range(600):
        body: dict[str, Any] = (await client.get(f"/v1/executions/{execution_id}")).json()
        if body["status"] not in ("pending", "running"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not finish")


async def test_serve_model_pins_every_run_over_any_client_field(
    sqlite_url: str, serve: Any, store_team: Any
) -> None:
    """Agents on openai:gpt-4.1 without a key run on `test` because the operator said `--model test`."""
    await store_team(sqlite_url, model="openai:gpt-4.1")
    async with serve(sqlite_url, model_override="test", allowed_models=("openai:gpt-4.1",)) as (_app, client):
        refused = await client.post(
            "/v1/topologies/review/run",
            json={"input": {"prompt": "hi"}, "config": {"model_override": "openai:gpt-4.1"}},
        )
        assert refused.status_code == 403
        assert "this server runs every agent on test" in refused.json()["detail"]
        accepted = await client.post("/v1/topologies/review/run", json={"input": {"prompt": "hi"}})
        assert accepted.status_code == 202
        done = await _finished(client, accepted.json()["execution_id"])
        assert done["status"] == "completed", done["error"]
        steps = (await client.get(f"/v1/executions/{done['id']}/steps")).json()["steps"]
        assert {step["model"] for step in steps} == {"test"}


async def test_an_allowed_override_works_and_a_local_path_never(
    sqlite_url: str, serve: Any, store_team: Any
) -> None:
    await store_team(sqlite_url, model="openai:gpt-4.1")
    allowed = ("test", "local:/tmp/model.gguf")
    async with serve(sqlite_url, allowed_models=allowed) as (_app, client):
        accepted = await client.post(
            "/v1/topologies/review/run",
            json={"input": {"prompt": "hi"}, "config": {"model_override": "test"}},
        )
        assert accepted.status_code == 202, accepted.text
        assert (await _finished(client, accepted.json()["execution_id"]))["status"] == "completed"
        for model in ("local:/tmp/model.gguf", "local:/etc/shadow", "local:../x.gguf"):
            refused = await client.post(
                "/v1/topologies/review/run",
                json={"input": {"prompt": "hi"}, "config": {"model_override": model}},
            )
            assert refused.status_code == 403
            assert "local model files are chosen by the server's operator" in refused.json()["detail"]


async def test_a_remote_caller_never_names_a_recorded_fixture(
    sqlite_url: str, serve: Any, store_team: Any
) -> None:
    """`recorded:FILE` reads a file on the server: like a `local:` file, only the operator names one,
    even when the allowlist holds it (the operator pins it with `qmcp serve --model recorded:FILE`)."""
    await store_team(sqlite_url)
    with pytest.raises(
        PermissionDeniedError, match="recorded fixtures are files, chosen by the server's operator"
    ):
        checked_run_options(
            Caller.client(Door.MCP),
            CallerPolicy(allowed_models=frozenset({"recorded:run.json"})),
            "local",
            {"model_override": "recorded:run.json"},
        )
    operator = checked_run_options(
        Caller.operator(Door.CLI), CallerPolicy(), "local", {"model_override": "recorded:x"}
    )
    assert operator.config.model_override == "recorded:x"
    async with serve(sqlite_url, allowed_models=("recorded:/etc/passwd",)) as (_app, client):
        refused = await client.post(
            "/v1/topologies/review/run",
            json={"input": {"prompt": "hi"}, "config": {"model_override": "recorded:/etc/passwd"}},
        )
        assert refused.status_code == 403
        assert "recorded fixtures are files, chosen by the server's operator" in refused.json()["detail"]
        page = await client.post(
            "/topologies/review/run",
            data={"input": '{"prompt": "hi"}', "runner": "local", "model": "recorded:run.json"},
            headers={"Origin": "http://127.0.0.1:3333"},
        )
        assert page.status_code == 400 and "recorded fixtures are files" in page.text
        assert (await client.get("/v1/executions")).json()["total"] == 0


async def test_an_operator_pins_a_recorded_fixture_for_every_remote_run(
    sqlite_url: str, serve: Any, store_team: Any, tmp_path: Path
) -> None:
    """`qmcp serve --model recorded:FILE`: clients' runs are answered from the recording, offline."""
    from qmcp.testing import export_fixture_async, save_fixture

    await store_team(sqlite_url)
    async with serve(sqlite_url) as (_app, client):
        accepted = await client.post("/v1/topologies/review/run", json={"input": {"prompt": "hi"}})
        recorded = await _finished(client, accepted.json()["execution_id"])
    fixture = tmp_path / "review.json"
    save_fixture(await export_fixture_async(recorded["id"], db_url=sqlite_url), fixture)
    async with serve(sqlite_url, model_override=f"recorded:{fixture}") as (_app, client):
        accepted = await client.post("/v1/topologies/review/run", json={"input": {"prompt": "other"}})
        done = await _finished(client, accepted.json()["execution_id"])
        assert done["status"] == "completed", done["error"]
        assert done["output"] == recorded["output"], "the recorded replies, whatever the input"
        steps = (await client.get(f"/v1/executions/{done['id']}/steps")).json()["steps"]
        assert {step["model"] for step in steps} == {f"recorded:{fixture}"}


@pytest.mark.slow  # Metaflow runs the flow in processes of its own
async def test_a_remote_metaflow_run_writes_its_flow_only_under_the_operators_directory(
    sqlite_url: str, serve: Any, store_team: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow of a client's Metaflow run is written and run from the operator's QMCP_FLOWS_DIR."""
    flows = tmp_path / "operator-flows"
    monkeypatch.setenv("QMCP_FLOWS_DIR", str(flows))
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(tmp_path / "mf"))
    monkeypatch.chdir(tmp_path)
    await store_team(sqlite_url)
    async with serve(sqlite_url) as (_app, client):
        accepted = await client.post(
            "/v1/topologies/review/run", json={"input": {"prompt": "hi"}, "runner": "metaflow"}
        )
        assert accepted.status_code == 202
        done = await _finished(client, accepted.json()["execution_id"])
    assert done["status"] == "completed", done["error"]
    async with Database(sqlite_url) as db:
        execution = await db.get_execution(done["id"])
    assert execution.runner_options["output_dir"] == str(flows)
    assert (flows / "review_flow.py").exists()
    assert not (tmp_path / "generated_flows").exists()


def test_policy_refusals_read_the_same_through_every_door_json() -> None:
    """The HTTP detail is the error's own sentence (what Python raises and the CLI prints)."""
    with pytest.raises(PermissionDeniedError) as raised:
        checked_run_options(Caller.client(Door.MCP), CallerPolicy(), "local", {"log_level": "DEBUG"})
    assert json.dumps(str(raised.value)) == json.dumps(
        "config.log_level is set by the server's operator, not by a client; leave it out"
    )


@pytest.mark.parametrize(
    ("topology", "input_data", "sentence"),
    [
        (
            "review",
            {"prompt": "hi", "deep": _deep(101)},
            "input_data is nested deeper than 100 levels; flatten it",
        ),
        ("nope", {"prompt": "hi"}, "topology 'nope' not found"),
    ],
)
async def test_a_user_error_reads_the_same_through_python_the_cli_http_and_mcp(
    topology: str, input_data: dict[str, Any], sentence: str, sqlite_url: str, serve: Any, store_team: Any
) -> None:
    from mcp import Client
    from typer.testing import CliRunner

    from qmcp.agentframework.errors import UserInputError
    from qmcp.app import RunRequest, start_run
    from qmcp.cli import app as cli_app
    from qmcp.server._mcp import mcp_server

    await store_team(sqlite_url)
    async with Database(sqlite_url) as db:
        with pytest.raises(UserInputError) as raised:
            await start_run(db, RunRequest(topology, input_data), Caller.operator())
    python = str(raised.value)
    assert sentence in python
    cli = await asyncio.to_thread(
        CliRunner().invoke,
        cli_app,
        ["--db", sqlite_url, "agents", "topologies", "run", topology, "--input-json", json.dumps(input_data)],
    )
    assert cli.exit_code == 2 and cli.stderr.strip() == f"error: {python}"
    async with serve(sqlite_url) as (app, client):
        answer = await client.post(f"/v1/topologies/{topology}/run", json={"input": input_data})
        assert answer.status_code in (400, 404) and answer.json()["detail"] == python
        async with Client(mcp_server(app.state.qmcp.runs, "test")) as session:
            result = await session.call_tool("run_topology", {"name": topology, "input": input_data})
        assert result.is_error and result.content[0].text == python  # the sentence alone, no SDK prefix
    async with Database(sqlite_url) as db:
        assert await db.count_executions() == 0


class _Capture(BaseHTTPRequestHandler):
    """Stands where Ollama listens: records each request's headers, answers an OpenAI chat completion."""

    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        self.seen.append({name.lower(): value for name, value in self.headers.items()})
        base = {"id": "c1", "created": 0, "model": "anything"}
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        self.send_response(200)
        if request.get("stream"):  # the server's runs stream their replies
            chunk = base | {"object": "chat.completion.chunk"}
            frames = [
                chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}]},
                chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                chunk | {"choices": [], "usage": usage},
            ]
            body = (
                "".join(f"data: {json.dumps(frame)}\n\n" for frame in frames).encode() + b"data: [DONE]\n\n"
            )
            self.send_header("content-type", "text/event-stream")
        else:
            message = {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            body = json.dumps(
                base | {"object": "chat.completion", "choices": [message], "usage": usage}
            ).encode()
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


async def test_a_clients_allowed_override_never_sends_an_agents_key_to_the_overriding_provider(
    sqlite_url: str, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trusted agent whose key variable belongs to its own endpoint, run over HTTP with an allowed
    override `ollama:anything`: what listens on Ollama's default port (127.0.0.1:11434) gets no key."""
    seen: list[dict[str, str]] = []
    try:
        capture = ThreadingHTTPServer(("127.0.0.1", 11434), type("Capture", (_Capture,), {"seen": seen}))
    except OSError:
        pytest.skip("127.0.0.1:11434 is taken on this machine")
    thread = threading.Thread(target=capture.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    for name in ("OLLAMA_BASE_URL", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_KEY_TEAM_A", "sk-team-a-secret")
    agent = AgentType(
        name="team-a",
        role=AgentRole.SPECIALIST,
        config={
            "model": "openai-compatible:team",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "OPENAI_KEY_TEAM_A",
        },
    )
    try:
        async with Database(sqlite_url) as db:
            await db.save_team(
                Topology(name="solo", topology_type=TopologyType.PIPELINE, config={}), {"only": agent}
            )
            await trust(db, [await db.get_agent("team-a")], via="test")
        async with serve(sqlite_url, allowed_models=("ollama:anything",)) as (_app, client):
            accepted = await client.post(
                "/v1/topologies/solo/run",
                json={"input": {"prompt": "hi"}, "config": {"model_override": "ollama:anything"}},
            )
            assert accepted.status_code == 202, accepted.text
            done = await _finished(client, accepted.json()["execution_id"])
    finally:
        capture.shutdown()
        capture.server_close()
    assert done["status"] == "completed", done["error"]
    assert seen, "the run reached the override's own endpoint"
    assert all("sk-team-a-secret" not in value for headers in seen for value in headers.values())


async def test_mcp_validates_its_enum_arguments(sqlite_url: str, serve: Any) -> None:
    """`list_human_requests(status="bogus")` is an error naming the allowed values, not an empty list."""
    from mcp import Client

    from qmcp.server import mcp_server

    async with (
        serve(sqlite_url) as (app, _client),
        Client(mcp_server(app.state.qmcp.runs, "test")) as session,
    ):
        bogus = await session.call_tool("list_human_requests", {"status": "bogus"})
        assert bogus.is_error and "pending" in bogus.content[0].text and "responded" in bogus.content[0].text
        fine = await session.call_tool("list_human_requests", {"status": "pending"})
        assert not fine.is_error
