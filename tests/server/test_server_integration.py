"""Runs that use a QMCP server: human_in_loop gates on it (QMCP_SERVER_URL), its tools through tool_use,
the run's correlation id on every call. The runs reach the server by its URL, so it is a process here."""

from __future__ import annotations

import threading

import httpx
from _eventually import eventually, eventually_async
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from qmcp.agentframework.llm import register_model, unregister_model
from qmcp.agentframework.models import AgentConfig, AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner, RunConfig

GATED = Topology(name="remote-gated", topology_type="pipeline")


def _gated_team(**gate: object) -> dict[str, AgentType]:
    return {
        "draft": AgentType(name="drafter", role="writer", config=AgentConfig(model="test").model_dump()),
        "publish": AgentType(
            name="publisher",
            role="writer",
            config=AgentConfig(
                model="test", capabilities=["human_in_loop"], mixins={"human_in_loop": dict(gate)}
            ).model_dump(),
        ),
    }


async def test_gates_live_on_the_server_and_are_answered_there(start_server, tmp_path, monkeypatch):
    server = start_server(f"sqlite+aiosqlite:///{tmp_path}/server.db")
    monkeypatch.setenv("QMCP_SERVER_URL", server.url)
    runner = LocalRunner(
        config=RunConfig(correlation_id="gate-run"), db_url=f"sqlite+aiosqlite:///{tmp_path}/run.db"
    )
    paused = await runner.run(GATED, _gated_team(), {"prompt": "Publish it"})
    assert paused.status == ExecutionStatus.PAUSED
    request_id = f"{paused.execution_id}:pipeline.1:publish~23human-after"
    async with httpx.AsyncClient(base_url=server.url) as client:
        (request,) = (await client.get("/v1/human/requests")).json()["requests"]
        assert request["id"] == request_id and request["correlation_id"] == "gate-run"
        assert request["context"] == {
            "execution_id": str(paused.execution_id),
            "step": "pipeline/1:publish",
            "slot": "publish",
            "agent": "publisher",
            "gate": "after",
        }
        still = await runner.resume(paused.execution_id)  # not answered yet: paused again, no second request
        assert still.status == ExecutionStatus.PAUSED
        assert (await client.get("/v1/human/requests")).json()["count"] == 1
        answered = await client.post(
            "/v1/human/responses", json={"request_id": request_id, "response": "approve"}
        )
        assert answered.status_code == 201
    done = await runner.resume(paused.execution_id)
    assert done.status == ExecutionStatus.COMPLETED, done.error


async def test_a_gate_can_wait_for_its_answer_on_the_server(start_server, tmp_path, monkeypatch):
    server = start_server(f"sqlite+aiosqlite:///{tmp_path}/server.db")
    monkeypatch.setenv("QMCP_SERVER_URL", server.url)

    def answer_when_asked() -> None:
        with httpx.Client(base_url=server.url) as client:
            (request,) = eventually(lambda: client.get("/v1/human/requests").json()["requests"], "the gate")
            client.post("/v1/human/responses", json={"request_id": request["id"], "response": "reject"})

    answering = threading.Thread(target=answer_when_asked)
    answering.start()
    result = await LocalRunner(db_url=f"sqlite+aiosqlite:///{tmp_path}/run.db").run(
        GATED, _gated_team(wait_seconds=30), {"prompt": "Publish it"}
    )
    answering.join()
    assert result.status == ExecutionStatus.CANCELLED and "answered 'reject'" in result.error


async def test_a_server_sharing_the_database_resumes_the_run_when_its_gate_is_answered(
    start_server, sqlite_url, monkeypatch
):
    server = start_server(sqlite_url)
    monkeypatch.setenv("QMCP_SERVER_URL", server.url)
    paused = await LocalRunner(db_url=sqlite_url).run(GATED, _gated_team(), {"prompt": "Publish it"})
    request_id = f"{paused.execution_id}:pipeline/1:publish#human-after"  # the raw key's form resolves too
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.post("/v1/human/responses", json={"request_id": request_id, "response": "approve"})
        await eventually_async(
            lambda: completed(client, paused.execution_id), "the server to resume the run to its end"
        )


async def completed(client: httpx.AsyncClient, execution_id: object) -> bool:
    return bool((await client.get(f"/v1/executions/{execution_id}")).json()["status"] == "completed")


def _tool_calling_model(calls: list[tuple[str, dict]]) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart(name, args) for name, args in calls])
        returns = [
            f"{part.tool_name}={part.content}"
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        return ModelResponse(parts=[TextPart("; ".join(returns))])

    return FunctionModel(respond, model_name="tools:qmcp")


async def test_tool_use_calls_the_servers_tools_with_the_runs_correlation_id(
    start_server, tmp_path, monkeypatch
):
    server = start_server(f"sqlite+aiosqlite:///{tmp_path}/server.db", env={"QMCP_API_TOKEN": "tok"})
    monkeypatch.setenv("QMCP_SERVER_URL", server.url)
    monkeypatch.setenv("QMCP_API_TOKEN", "tok")
    register_model(
        "tools:qmcp", _tool_calling_model([("add_numbers", {"a": 2, "b": 40}), ("echo", {"message": "hi"})])
    )
    try:
        agent = AgentType(
            name="caller",
            config=AgentConfig(
                model="tools:qmcp",
                capabilities=["tool_use"],
                mixins={"tool_use": {"qmcp_servers": [{"tools": ["add_numbers", "echo"]}]}},
            ).model_dump(),
        )
        result = await LocalRunner(
            config=RunConfig(correlation_id="tools-run"), db_url=f"sqlite+aiosqlite:///{tmp_path}/run.db"
        ).run(Topology(name="one", topology_type="pipeline"), {"only": agent}, {"prompt": "add"})
    finally:
        unregister_model("tools:qmcp")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert result.output["output"] == "add_numbers=42; echo=hi"
    async with server.client() as client:
        invocations = (await client.get("/v1/invocations")).json()["invocations"]
    assert {(i["tool_name"], i["correlation_id"]) for i in invocations} == {
        ("add_numbers", "tools-run"),
        ("echo", "tools-run"),
    }
