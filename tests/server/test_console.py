"""The console's pages and forms, against a real `qmcp serve` on 127.0.0.1, with httpx."""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from conftest import Server, wait_until

from qmcp.agentframework.models import AgentType, Topology
from qmcp.agentframework.runners import AsyncRunner

pytestmark = pytest.mark.slow

AGENTS = [
    {"name": "planner-a", "role": "planner", "config": {"model": "test"}},
    {"name": "writer-a", "role": "writer", "config": {"model": "test"}},
    {"name": "slow-a", "role": "writer", "config": {"model": "scripted:slow"}},
    {"name": "streamer", "role": "writer", "config": {"model": "scripted:stream"}},
    {"name": "gated-a", "role": "writer", "config": {"model": "test", "capabilities": ["human_in_loop"]}},
]
TOPOLOGIES = [
    {"name": "plan-write", "type": "pipeline", "agents": {"plan": "planner-a", "write": "writer-a"}},
    {"name": "slow-two", "type": "pipeline", "agents": {"s0": "slow-a", "s1": "slow-a"}},
    {"name": "streaming", "type": "pipeline", "agents": {"first": "streamer", "second": "streamer"}},
    {"name": "gated", "type": "pipeline", "agents": {"draft": "writer-a", "publish": "gated-a"}},
    {
        "name": "panel",
        "type": "ensemble",
        "config": {"aggregation_method": "synthesis"},
        "agents": {"one": "planner-a", "two": "writer-a", "aggregator": "writer-a"},
    },
]


def make_team(client: httpx.Client) -> None:
    for agent in AGENTS:
        assert client.post("/v1/agents", json=agent).status_code == 201, agent
    for topology in TOPOLOGIES:
        response = client.post("/v1/topologies", json=topology)
        assert response.status_code == 201, response.text


def finished(client: httpx.Client, execution_id: str, seconds: float = 60) -> dict:
    def done() -> dict | None:
        execution = client.get(f"/v1/executions/{execution_id}").json()
        return execution if execution["status"] not in ("pending", "running") else None

    return wait_until(done, f"execution {execution_id} to finish", seconds)


def run(client: httpx.Client, topology: str, prompt: str = "Why is the sky blue?") -> str:
    response = client.post(f"/v1/topologies/{topology}/run", json={"input": {"prompt": prompt}})
    assert response.status_code == 202, response.text
    return response.json()["execution_id"]


def node_classes(html: str) -> dict[str, str]:
    return {key: cls for cls, key in re.findall(r'<g class="(node [^"]*)" data-key="([^"]+)"', html)}


@pytest.fixture
def server(start_server, db_url) -> Server:
    return start_server(db_url)


def test_pages_show_executions_diagrams_and_steps(server):
    with server.client() as client:
        make_team(client)
        execution_id = run(client, "panel")
        assert finished(client, execution_id)["status"] == "completed"

        listing = client.get("/")
        assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
        assert f'href="/executions/{execution_id}"' in listing.text
        assert '<span class="badge s-completed">completed</span>' in listing.text
        assert '<label for="f-status">' in listing.text  # filters are labelled

        page = client.get(f"/executions/{execution_id}")
        assert page.status_code == 200
        nodes = node_classes(page.text)
        assert nodes["ensemble/member:one"] == "node kind-step s-completed"
        assert nodes["ensemble/aggregate"] == "node kind-step s-completed"
        assert page.text.count('class="bar s-completed"') == 3  # the timeline: a bar per step
        assert re.search(r'<text class="lane"[^>]*>aggregator</text>', page.text)
        assert "Cancel</button>" not in page.text and "Resume</button>" not in page.text

        key = "ensemble/member:two"
        panel = client.get(f"/executions/{execution_id}/panel", params={"step": key})
        step = next(
            s for s in client.get(f"/v1/executions/{execution_id}/steps").json()["steps"] if s["key"] == key
        )
        assert step["response"] and step["response"].split("\n")[0] in panel.text
        assert "Why is the sky blue?" in panel.text  # the prompt
        assert step["model"] in panel.text and "<h3>Response</h3>" in panel.text
        same = client.get(f"/executions/{execution_id}", params={"step": key})  # the same without script
        assert step["response"].split("\n")[0] in same.text

        topologies = client.get("/topologies")
        assert 'href="/topologies/panel"' in topologies.text
        topology = client.get("/topologies/panel")
        assert set(node_classes(topology.text)) >= {"ensemble/member:one", "ensemble/aggregate"}
        assert '<label for="run-input">' in topology.text and f"/executions/{execution_id}" in topology.text

        for path in ("/static/console.js", "/static/console.css"):
            assert client.get(path).status_code == 200
        assert client.get("/static/../_routes.py").status_code == 404
        missing = client.get(f"/executions/{uuid.uuid4()}")
        assert missing.status_code == 404 and "not found" in missing.text
        assert client.get("/topologies/nope").status_code == 404


def test_the_run_form_starts_a_run_and_opens_its_page(server):
    with server.client() as client:
        make_team(client)
        started = client.post(
            "/topologies/plan-write/run",
            data={"input": '{"prompt": "Plan a trip"}', "runner": "async", "model": ""},
        )
        assert started.status_code == 303
        execution_id = started.headers["location"].rsplit("/", 1)[-1]
        execution = finished(client, execution_id)
        assert execution["status"] == "completed" and execution["runner_type"] == "async"
        assert client.get(f"/v1/executions/{execution_id}").json()["input"] == {"prompt": "Plan a trip"}

        before = client.get("/v1/executions").json()["total"]
        for given, says in (
            ("{not json", "the input is not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
        ):
            refused = client.post("/topologies/plan-write/run", data={"input": given, "runner": "local"})
            assert refused.status_code == 400 and says in refused.text
            assert 'role="alert"' in refused.text and given.replace('"', "&#34;") in refused.text
        refused = client.post("/topologies/plan-write/run", data={"input": "{}", "runner": "nope"})
        assert refused.status_code == 400 and "nope" in refused.text
        assert client.get("/v1/executions").json()["total"] == before  # nothing half-made


def test_filters_and_paging(server):
    with server.client() as client:
        make_team(client)
        ids = [run(client, "plan-write", f"task {n}") for n in range(26)]
        other = run(client, "panel")
        for execution_id in [*ids, other]:
            finished(client, execution_id)
        first = client.get("/", params={"topology": "plan-write"})
        assert "26 executions" in first.text and "page 1 of 2" in first.text
        assert first.text.count('<tr data-id="') == 25 and other not in first.text
        second = client.get("/", params={"topology": "plan-write", "page": 2})
        assert second.text.count('<tr data-id="') == 1 and ids[0] in second.text  # oldest last
        rows = client.get("/", params={"status": "failed", "fragment": "rows"})
        assert "<html" not in rows.text and "No executions match these filters" in rows.text


def test_approve_a_paused_run_from_its_page(server):
    with server.client() as client:
        make_team(client)
        execution_id = run(client, "gated", "Publish it")
        assert finished(client, execution_id)["status"] == "paused"
        page = client.get(f"/executions/{execution_id}").text
        assert "Waiting for you: approval" in page
        assert re.search(r'<button type="submit" name="choice" value="approve"', page)
        assert re.search(r'<button type="submit" name="choice" value="reject"', page)
        request_id = f"{execution_id}:pipeline/1:publish#human-after"
        assert f'value="{request_id}"' in page
        answered = client.post(
            f"/executions/{execution_id}/respond", data={"request_id": request_id, "choice": "approve"}
        )
        assert answered.status_code == 303 and "answered" in answered.headers["location"]
        done = finished(client, execution_id)
        assert done["status"] == "completed" and done["attempts"] == 2
        again = client.post(
            f"/executions/{execution_id}/respond", data={"request_id": request_id, "choice": "approve"}
        )
        assert again.status_code == 303 and "notice=" in again.headers["location"]  # already answered


def test_cancel_then_resume_from_the_page(start_server, db_url):
    server = start_server(db_url, env={"DRIVER_LATENCY": "30"})
    with server.client() as client:
        make_team(client)
        execution_id = run(client, "slow-two")
        page = wait_until(
            lambda: (
                (text := client.get(f"/executions/{execution_id}").text)
                and node_classes(text)["pipeline/0:s0"] == "node kind-step s-running"
                and text
            ),
            "the first step to run",
        )
        assert 'id="cancel"' in page and 'class="bar s-running"' in page and "data-start=" in page
        cancelled = client.post(f"/executions/{execution_id}/cancel")
        assert cancelled.status_code == 303
        assert finished(client, execution_id, 10)["status"] == "cancelled"
        page = client.get(f"/executions/{execution_id}").text
        assert 'id="resume"' in page and 'id="cancel"' not in page
        resumed = client.post(f"/executions/{execution_id}/resume")
        assert resumed.status_code == 303 and "resume+queued" in resumed.headers["location"]
        wait_until(
            lambda: client.get(f"/v1/executions/{execution_id}").json()["status"] == "running", "resumed"
        )


def test_text_streams_over_sse_before_the_step_completes(start_server, db_url):
    server = start_server(db_url, env={"DRIVER_CHUNK_DELAY": "0.1", "DRIVER_WORDS": "10"})
    with server.client() as client:
        make_team(client)
        execution_id = run(client, "streaming")
        events: list[dict] = []
        partial = None
        with client.stream("GET", f"/v1/executions/{execution_id}/events") as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line[5:]))
                deltas = [e for e in events if e["event"] == "delta" and e["key"] == "pipeline/1:second"]
                if len(deltas) == 3 and partial is None:  # a page opened mid-step shows the text so far
                    partial = client.get(
                        f"/executions/{execution_id}/panel", params={"step": "pipeline/1:second"}
                    ).text
        assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
        steps = {s["key"]: s for s in client.get(f"/v1/executions/{execution_id}/steps").json()["steps"]}
        for key in ("pipeline/0:first", "pipeline/1:second"):
            kinds = [(e["event"], e.get("kind")) for e in events if e.get("key") == key]
            done = kinds.index(("step", "completed"))
            assert kinds.count(("delta", None)) == 10 and all(k == ("delta", None) for k in kinds[1:done])
            text = "".join(e["text"] for e in events if e["event"] == "delta" and e["key"] == key)
            assert text == steps[key]["response"]
        assert partial is not None and "Response, as it is written" in partial
        assert re.search(r'data-stream-key="pipeline/1:second" aria-live="polite">word0 word1 word2', partial)


def test_sign_in_with_the_token(start_server, db_url):
    server = start_server(db_url, env={"QMCP_API_TOKEN": "s3cret-token"})
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        first = browser.get("/executions/x?step=a")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=" + quote("/executions/x?step=a", safe="")
        assert browser.get("/v1/executions").status_code == 401  # the API answers, it does not redirect
        assert browser.get("/login").status_code == 200
        wrong = browser.post("/login", data={"token": "nope", "next": "/topologies"})
        assert wrong.status_code == 401 and "not this server" in wrong.text and not browser.cookies
        right = browser.post("/login", data={"token": "s3cret-token", "next": "/topologies"})
        assert right.status_code == 303 and right.headers["location"] == "/topologies"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "s3cret-token" not in cookie  # a digest, not the token
        assert browser.get("/topologies").status_code == 200
        assert browser.get("/v1/executions").status_code == 200  # the page's script uses the API too
        assert browser.post("/logout").status_code == 303 and browser.get("/").status_code == 303
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        link = browser.get("/login", params={"token": "s3cret-token", "next": "//evil.example/"})
        assert link.status_code == 303 and link.headers["location"] == "/"
        assert browser.get("/").status_code == 200
    with server.client() as client:  # bearer clients are unchanged
        assert client.get("/v1/executions").status_code == 200 and client.get("/").status_code == 200


def test_posts_from_other_sites_are_refused(server):
    with server.client() as client:
        make_team(client)
        before = client.get("/v1/executions").json()["total"]
        form = {"input": '{"prompt": "x"}', "runner": "local"}
        evil = client.post("/topologies/plan-write/run", data=form, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "another site" in evil.json()["detail"]
        api = client.post(
            "/v1/topologies/plan-write/run", json={"input": {}}, headers={"Origin": "http://evil.example"}
        )
        assert api.status_code == 403
        assert client.get("/v1/executions").json()["total"] == before
        same = client.post("/topologies/plan-write/run", data=form, headers={"Origin": server.url})
        assert same.status_code == 303


async def test_the_page_of_a_thousand_step_execution_renders_in_under_a_second(start_server, db_url):
    members = {
        f"m{n:04d}": AgentType(name="member", role="analyst", config={"model": "test"}) for n in range(1000)
    }
    topology = Topology(name="wide", topology_type="ensemble", config={"aggregation_method": "vote"})
    result = await AsyncRunner(db_url=db_url, max_concurrent=50).run(topology, members, {"prompt": "Count"})
    assert result.status == "completed", result.error
    server = start_server(db_url)
    with server.client() as client:
        url = f"/executions/{result.execution_id}"
        assert client.get(url).status_code == 200  # warm
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            page = client.get(url)
            timings.append(time.perf_counter() - started)
        assert page.status_code == 200 and page.text.count('class="bar s-completed"') == 1000
        assert len(node_classes(page.text)) == 1003
        assert min(timings) < 1.0, timings
        print(f"1,000-step execution page: {min(timings) * 1000:.0f} ms, {len(page.text) / 1e6:.1f} MB")


def test_answer_a_free_text_request_from_the_page(server):
    with server.client() as client:
        make_team(client)
        agent = {
            "name": "asker",
            "role": "writer",
            "config": {
                "model": "test",
                "capabilities": ["human_in_loop"],
                "mixins": {"human_in_loop": {"when": "before", "options": [], "prompt": "Which audience?"}},
            },
        }
        assert client.post("/v1/agents", json=agent).status_code == 201
        topology = {"name": "ask", "type": "pipeline", "agents": {"write": "asker"}}
        assert client.post("/v1/topologies", json=topology).status_code == 201
        execution_id = run(client, "ask", "Write a note")
        assert finished(client, execution_id)["status"] == "paused"
        page = client.get(f"/executions/{execution_id}").text
        assert "Which audience?" in page and '<label for="answer-1">Your answer</label>' in page
        assert 'name="choice"' not in page
        request_id = re.search(r'name="request_id" value="([^"]+)"', page).group(1)
        empty = client.post(
            f"/executions/{execution_id}/respond", data={"request_id": request_id, "text": "  "}
        )
        assert "write+an+answer" in empty.headers["location"]
        answered = client.post(
            f"/executions/{execution_id}/respond", data={"request_id": request_id, "text": "engineers"}
        )
        assert answered.status_code == 303
        assert finished(client, execution_id)["status"] == "completed"
        human = client.get(f"/v1/human/requests/{quote(request_id, safe='')}").json()
        assert human["response"]["response"] == "engineers" and human["response"]["responded_by"] == "console"
