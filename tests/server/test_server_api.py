"""The QMCP server's endpoints against a real uvicorn process on 127.0.0.1, with httpx."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from urllib.parse import quote

import pytest
from conftest import Server, wait_until
from sqlalchemy import update

from qmcp.agentframework.models import HumanRequest, utcnow
from qmcp.agentframework.store import Database

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"

TEAM = {
    "agents": [
        {"name": "planner-a", "role": "planner", "config": {"model": "test"}},
        {"name": "writer-a", "role": "writer", "config": {"model": "test"}},
        {"name": "slow-a", "role": "writer", "config": {"model": "scripted:slow"}},
        {
            "name": "gated-a",
            "role": "writer",
            "config": {"model": "test", "capabilities": ["human_in_loop"]},
        },
    ],
}


def _team(client) -> None:
    for agent in TEAM["agents"]:
        assert client.post("/v1/agents", json=agent).status_code == 201, agent
    topologies = [
        {"name": "plan-write", "type": "pipeline", "agents": {"plan": "planner-a", "write": "writer-a"}},
        {"name": "slow-three", "type": "pipeline", "agents": {f"s{i}": "slow-a" for i in range(3)}},
        {"name": "gated", "type": "pipeline", "agents": {"draft": "writer-a", "publish": "gated-a"}},
    ]
    for topology in topologies:
        response = client.post("/v1/topologies", json=topology)
        assert response.status_code == 201, response.text


def _finished(client, execution_id: str, seconds: float = 60) -> dict:
    def done() -> dict | None:
        execution = client.get(f"/v1/executions/{execution_id}").json()
        return execution if execution["status"] not in ("pending", "running") else None

    return wait_until(done, f"execution {execution_id} to finish", seconds)


@pytest.fixture
def server(start_server, db_url) -> Server:
    return start_server(db_url, model="test")


def test_health_ids_and_metrics(server):
    with server.client() as client:
        health = client.get("/health", headers={"X-Correlation-ID": "corr-1"})
        assert health.json() == {"status": "healthy", "version": health.json()["version"]}
        assert health.headers["x-correlation-id"] == "corr-1" and len(health.headers["x-request-id"]) == 32
        client.post("/v1/tools/echo", json={"input": {"message": "x"}})
        text = client.get("/metrics").text
        for name in (
            "qmcp_http_requests_total",
            "qmcp_http_request_duration_seconds",
            "qmcp_tool_invocations_total",
            "qmcp_tool_duration_seconds",
            "qmcp_hitl_requests_total",
            "qmcp_runs_total",
            "qmcp_steps_total",
            "qmcp_tokens_total",
        ):
            assert name in text, name
        assert 'path="/v1/tools/{tool_name}"' in text  # routes, not raw paths, as labels
        document = client.get("/metrics/json").json()
        assert document["qmcp_tool_invocations_total"]["type"] == "counter"
        assert client.get("/openapi.json").json()["info"]["title"] == "QMCP server"


def test_tools_and_invocations(server):
    with server.client() as client:
        tools = {t["name"]: t for t in client.get("/v1/tools").json()["tools"]}
        assert {"echo", "planner", "executor", "reviewer", "add_numbers", "explode"} <= set(tools)
        assert tools["add_numbers"]["input_schema"]["required"] == ["a", "b"]
        echo = client.post(
            "/v1/tools/echo", json={"input": {"message": "hello"}, "correlation_id": "c-9"}
        ).json()
        assert echo["result"] == "hello" and echo["error"] is None
        assert client.post("/v1/tools/add_numbers", json={"input": {"a": 2, "b": 3}}).json()["result"] == 5
        broken = client.post("/v1/tools/explode", json={"input": {}})
        assert broken.status_code == 200 and "the tool broke" in broken.json()["error"]
        invalid = client.post("/v1/tools/echo", json={"input": {"msg": "x"}}).json()
        assert invalid["result"] is None and invalid["error"].startswith("invalid input for echo: message")
        missing = client.post("/v1/tools/nope", json={"input": {}})
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
        assert missing.json()["detail"] == "tool 'nope' not found; list them at GET /v1/tools"

        plan = client.post("/v1/tools/planner", json={"input": {"goal": "launch a product"}}).json()["result"]
        assert plan["goal"] == "launch a product" and plan["estimated_steps"] == len(plan["steps"]) > 0
        assert {"step", "action", "description"} == set(plan["steps"][0])
        dry = client.post("/v1/tools/executor", json={"input": {"plan": plan}}).json()["result"]
        assert dry["mode"] == "dry_run" and {r["status"] for r in dry["results"]} == {"simulated"}
        live = client.post("/v1/tools/executor", json={"input": {"plan": plan, "dry_run": False}}).json()
        assert live["result"]["mode"] == "live" and all(r["output"] for r in live["result"]["results"])
        review = client.post(
            "/v1/tools/reviewer", json={"input": {"result": live["result"], "criteria": ["safety", "cost"]}}
        ).json()["result"]
        assert [c["criterion"] for c in review["checks"]] == ["safety", "cost"]
        assert review["overall_status"] in ("approved", "changes_requested")

        listed = client.get("/v1/invocations", params={"tool_name": "echo"}).json()
        assert listed["count"] == 2 and {i["tool_name"] for i in listed["invocations"]} == {"echo"}
        failed = client.get("/v1/invocations", params={"status": "failed"}).json()["invocations"]
        assert {i["tool_name"] for i in failed} == {"explode", "echo"}
        one = client.get(f"/v1/invocations/{echo['invocation_id']}").json()
        assert (one["status"], one["result"], one["correlation_id"]) == ("success", "hello", "c-9")
        assert one["duration_ms"] is not None and one["completed_at"]
        assert client.get("/v1/invocations", params={"limit": 501}).status_code == 422
        assert client.get(f"/v1/invocations/{uuid.uuid4()}").status_code == 404


async def test_human_requests_in_upstreams_shapes(server):
    with server.client() as client:
        body = {
            "id": "deploy-1",
            "request_type": "approval",
            "prompt": "Deploy?",
            "options": ["approve", "reject"],
        }
        created = client.post("/v1/human/requests", json=body)
        assert created.status_code == 201
        assert created.json()["status"] == "pending" and created.json()["expires_at"]
        assert client.post("/v1/human/requests", json=body).status_code == 409
        assert (
            client.post("/v1/human/requests", json=body | {"id": "x", "timeout_seconds": 10}).status_code
            == 422
        )
        assert (
            client.post("/v1/human/requests", json=body | {"id": "y", "request_type": "vote"}).status_code
            == 422
        )
        got = client.get("/v1/human/requests/deploy-1").json()
        assert got["request"]["context"] == {} and got["response"] is None
        listed = client.get(
            "/v1/human/requests", params={"status": "pending", "request_type": "approval"}
        ).json()
        assert [r["id"] for r in listed["requests"]] == ["deploy-1"] and listed["count"] == 1

        bad = client.post("/v1/human/responses", json={"request_id": "deploy-1", "response": "maybe"})
        assert bad.status_code == 400 and "answer one of: approve, reject" in bad.json()["detail"]
        answer = client.post(
            "/v1/human/responses",
            json={
                "request_id": "deploy-1",
                "response": "approve",
                "responded_by": "ana",
                "response_metadata": {"n": 1},
            },
        )
        assert answer.status_code == 201 and answer.json()["responded_by"] == "ana"
        again = client.post("/v1/human/responses", json={"request_id": "deploy-1", "response": "reject"})
        assert again.status_code == 409
        assert (
            client.post("/v1/human/responses", json={"request_id": "ghost", "response": "x"}).status_code
            == 404
        )
        got = client.get("/v1/human/requests/deploy-1").json()
        assert got["request"]["status"] == "responded" and got["response"]["response"] == "approve"

        client.post(
            "/v1/human/requests", json=body | {"id": "late", "request_type": "input", "options": None}
        )
        async with Database(server.db_url) as db, db.sessions() as session, session.begin():  # an hour passes
            await session.exec(
                update(HumanRequest)
                .where(HumanRequest.id == "late")
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        assert client.get("/v1/human/requests/late").json()["request"]["status"] == "expired"
        gone = client.post("/v1/human/responses", json={"request_id": "late", "response": "x"})
        assert gone.status_code == 410 and gone.headers["content-type"] == PROBLEM


def test_agents_topologies_and_runs(server):
    with server.client() as client:
        _team(client)
        assert client.post("/v1/agents", json=TEAM["agents"][0]).status_code == 409
        bad = client.post("/v1/agents", json={"name": "x", "config": {"temperature": 5}})
        assert bad.status_code == 400 and "temperature" in bad.json()["detail"]
        assert client.get("/v1/agents/planner-a").json()["role"] == "planner"
        changed = client.put(
            "/v1/agents/writer-a", json={"name": "writer-a", "role": "writer", "description": "new"}
        )
        assert changed.json()["description"] == "new"
        assert client.get("/v1/agents/ghost").status_code == 404
        names = [a["name"] for a in client.get("/v1/agents").json()["agents"]]
        assert names == sorted(names) and "planner-a" in names
        wrong = client.post(
            "/v1/topologies", json={"name": "t", "type": "crosscheck", "agents": {"primary": "writer-a"}}
        )
        assert wrong.status_code == 400 and "checker" in wrong.json()["detail"]
        assert client.get("/v1/topologies/plan-write").json()["agents"] == {
            "plan": "planner-a",
            "write": "writer-a",
        }
        dag = client.get("/v1/topologies/plan-write/dag").json()
        assert [n["id"] for n in dag["nodes"]] == ["input", "pipeline/0:plan", "pipeline/1:write", "output"]

        accepted = client.post(
            "/v1/topologies/plan-write/run",
            json={"input": {"prompt": "Plan a launch"}},
            headers={"X-Correlation-ID": "run-7"},
        )
        assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
        execution = _finished(client, accepted.json()["execution_id"])
        assert execution["status"] == "completed" and execution["origin"] == "server"
        assert execution["correlation_id"] == "run-7" and execution["output"]["output"]
        steps = client.get(f"/v1/executions/{execution['id']}/steps").json()["steps"]
        assert [s["key"] for s in steps] == ["pipeline/0:plan", "pipeline/1:write"]
        listed = client.get("/v1/executions", params={"topology": "plan-write", "status": "completed"}).json()
        assert [e["id"] for e in listed["executions"]] == [execution["id"]] and listed["total"] == 1
        assert client.get("/v1/executions", params={"status": "nope"}).status_code == 400

        refused = client.post(
            "/v1/topologies/plan-write/run", json={"input": {"prompt": "x"}, "config": {"bogus": 1}}
        )
        assert refused.status_code == 400 and "bogus" in refused.json()["detail"]
        assert client.post("/v1/topologies/ghost/run", json={"input": {}}).status_code == 404
        deep: dict = {}
        node = deep
        for _ in range(150):
            node["x"] = {}
            node = node["x"]
        assert client.post("/v1/topologies/plan-write/run", json={"input": deep}).status_code == 400
        assert client.delete("/v1/agents/planner-a").status_code == 400  # a topology uses it
        assert client.delete("/v1/topologies/plan-write").status_code == 400  # an execution ran it
        assert client.delete("/v1/topologies/plan-write", params={"force": True}).status_code == 204
        assert client.get(f"/v1/executions/{execution['id']}").json()["status"] == "completed"


def test_a_paused_run_is_answered_over_http_and_finishes(server):
    with server.client() as client:
        _team(client)
        run = client.post("/v1/topologies/gated/run", json={"input": {"prompt": "Publish it"}}).json()
        paused = _finished(client, run["execution_id"])
        assert paused["status"] == "paused"
        (request,) = client.get("/v1/human/requests", params={"status": "pending"}).json()["requests"]
        assert request["id"] == f"{run['execution_id']}:pipeline/1:publish#human-after"
        assert request["context"]["agent"] == "gated-a" and request["request_type"] == "approval"
        shown = client.get(f"/v1/human/requests/{quote(request['id'], safe='')}")  # '/', ':' and '#' in it
        assert shown.status_code == 200 and shown.json()["request"]["id"] == request["id"]
        answered = client.post(
            "/v1/human/responses", json={"request_id": request["id"], "response": "approve"}
        )
        assert answered.status_code == 201
        done = _finished(client, run["execution_id"])
        assert done["status"] == "completed" and done["attempts"] == 2


def test_events_replay_then_follow_until_the_run_ends(start_server, db_url):
    server = start_server(db_url, env={"DRIVER_LATENCY": "0.4"})
    with server.client() as client:
        _team(client)
        run = client.post("/v1/topologies/slow-three/run", json={"input": {"prompt": "go"}}).json()
        wait_until(lambda: server.paid(), "the first step")  # connect mid-run: replay, then live
        with client.stream("GET", f"/v1/executions/{run['execution_id']}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            data = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
        events = [json.loads(d) for d in data]
        assert events[0]["event"] == "status" and events[-1]["event"] == "end"
        assert events[-1]["status"] == "completed"
        completed = [e["key"] for e in events if e["event"] == "step" and e["kind"] == "completed"]
        assert completed == ["pipeline/0:s0", "pipeline/1:s1", "pipeline/2:s2"]  # each once
        # after the end: the whole history again, then `end` at once
        with client.stream("GET", f"/v1/executions/{run['execution_id']}/events") as response:
            replay = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
        assert [e["key"] for e in replay if e["event"] == "step"] == completed and replay[-1][
            "event"
        ] == "end"
        assert client.get(f"/v1/executions/{uuid.uuid4()}/events").status_code == 404


def test_cancel_over_http_stops_a_running_run(start_server, db_url):
    server = start_server(db_url, env={"DRIVER_LATENCY": "30"})
    with server.client() as client:
        _team(client)
        run = client.post("/v1/topologies/slow-three/run", json={"input": {"prompt": "go"}}).json()
        wait_until(
            lambda: client.get(f"/v1/executions/{run['execution_id']}").json()["status"] == "running",
            "running",
        )
        cancelled = client.post(f"/v1/executions/{run['execution_id']}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert _finished(client, run["execution_id"], 10)["status"] == "cancelled" and server.paid() == []
        resumed = client.post(f"/v1/executions/{run['execution_id']}/resume")
        assert resumed.status_code == 202


def test_bodies_that_are_too_large_or_malformed(start_server, db_url):
    server = start_server(db_url, env={"QMCP_MAX_BODY_BYTES": "2048"})
    with server.client() as client:
        big = client.post("/v1/tools/echo", json={"input": {"message": "x" * 5000}})
        assert big.status_code == 413 and big.headers["content-type"] == PROBLEM
        chunked = client.post(
            "/v1/tools/echo",
            content=iter([b'{"input": {"message": "', b"x" * 4000, b'"}}']),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        malformed = client.post(
            "/v1/tools/echo", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422 and malformed.headers["content-type"] == PROBLEM
        deep = client.post(
            "/v1/tools/echo", content=b"[" * 1500 + b"]" * 1500, headers={"content-type": "application/json"}
        )
        assert deep.status_code in (400, 413, 422) and deep.headers["content-type"] == PROBLEM


def test_stored_definitions_that_run_code_need_trust_given_on_the_servers_machine(server):
    with server.client() as client:
        tooled = {
            "name": "tooled",
            "config": {
                "model": "test",
                "capabilities": ["tool_use"],
                "mixins": {"tool_use": {"tools": ["add_numbers"]}},
            },
        }
        assert client.post("/v1/agents", json=tooled).status_code == 201
        client.post(
            "/v1/topologies", json={"name": "uses-tools", "type": "pipeline", "agents": {"only": "tooled"}}
        )
        refused = client.post("/v1/topologies/uses-tools/run", json={"input": {"prompt": "x"}})
        assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
        assert "qmcp trust agent tooled" in refused.json()["detail"]
        assert client.get("/v1/executions").json()["total"] == 0  # nothing was written


def test_a_run_continues_the_trace_of_the_request_that_started_it(start_server, sqlite_url, tmp_path):
    spans = tmp_path / "spans.jsonl"
    server = start_server(sqlite_url, model="test", env={"QMCP_TEST_SPAN_LOG": str(spans)})
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with server.client() as client:
        _team(client)
        run = client.post(
            "/v1/topologies/plan-write/run",
            json={"input": {"prompt": "Plan"}},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        ).json()
        assert _finished(client, run["execution_id"])["status"] == "completed"
    recorded = [json.loads(line) for line in spans.read_text().splitlines()]
    (workflow,) = [s for s in recorded if s["name"].startswith("invoke_workflow")]
    assert (workflow["trace_id"], workflow["parent_id"]) == (trace_id, parent_id)
    steps = [s for s in recorded if s["name"].startswith("invoke_agent")]
    assert len(steps) == 2 and {s["trace_id"] for s in steps} == {trace_id}
