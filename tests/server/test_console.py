"""The console's pages and forms, in this process: the app on the test's loop, driven by httpx."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from _eventually import eventually_async
from doubles import Doubles
from serving import BASE_URL, App
from team import finished, make_team, node_classes, run, running

from qmcp.agentframework.models import AgentType, Topology
from qmcp.agentframework.runners import AsyncRunner
from qmcp.server.console import CONSOLE_COOKIE


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url)


async def test_pages_show_executions_diagrams_and_steps(server):
    client = server.client
    await make_team(client)
    execution_id = await run(client, "panel")
    assert (await finished(client, execution_id))["status"] == "completed"

    listing = await client.get("/")
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    assert f'href="/executions/{execution_id}"' in listing.text
    assert '<span class="badge s-completed">completed</span>' in listing.text
    assert '<label for="f-status">' in listing.text  # filters are labelled

    page = await client.get(f"/executions/{execution_id}")
    assert page.status_code == 200
    nodes = node_classes(page.text)
    assert nodes["ensemble/member:one"] == "node kind-step s-completed"
    assert nodes["ensemble/aggregate"] == "node kind-step s-completed"
    assert page.text.count('class="bar s-completed"') == 3  # the timeline: a bar per step
    assert re.search(r'<text class="lane"[^>]*>aggregator</text>', page.text)
    assert "Cancel</button>" not in page.text and "Resume</button>" not in page.text

    key = "ensemble/member:two"
    panel = await client.get(f"/executions/{execution_id}/panel", params={"step": key})
    steps = (await client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
    step = next(s for s in steps if s["key"] == key)
    assert step["response"] and step["response"].split("\n")[0] in panel.text
    assert "Why is the sky blue?" in panel.text  # the prompt
    assert step["model"] in panel.text and "<h3>Response</h3>" in panel.text
    same = await client.get(f"/executions/{execution_id}", params={"step": key})  # the same without script
    assert step["response"].split("\n")[0] in same.text

    topologies = await client.get("/topologies")
    assert 'href="/topologies/panel"' in topologies.text
    topology = await client.get("/topologies/panel")
    assert set(node_classes(topology.text)) >= {"ensemble/member:one", "ensemble/aggregate"}
    assert '<label for="run-input">' in topology.text and f"/executions/{execution_id}" in topology.text

    for path in ("/static/console.js", "/static/console.css"):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/static/../_routes.py")).status_code == 404
    missing = await client.get(f"/executions/{uuid.uuid4()}")
    assert missing.status_code == 404 and "not found" in missing.text
    assert (await client.get("/topologies/nope")).status_code == 404


async def test_the_run_form_starts_a_run_and_opens_its_page(server):
    client = server.client
    await make_team(client)
    started = await client.post(
        "/topologies/plan-write/run",
        data={"input": '{"prompt": "Plan a trip"}', "runner": "async", "model": ""},
    )
    assert started.status_code == 303
    execution_id = started.headers["location"].rsplit("/", 1)[-1]
    execution = await finished(client, execution_id)
    assert execution["status"] == "completed" and execution["runner_type"] == "async"
    assert (await client.get(f"/v1/executions/{execution_id}")).json()["input"] == {"prompt": "Plan a trip"}

    before = (await client.get("/v1/executions")).json()["total"]
    for given, says in (
        ("{not json", "the input is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ):
        refused = await client.post("/topologies/plan-write/run", data={"input": given, "runner": "local"})
        assert refused.status_code == 400 and says in refused.text
        assert 'role="alert"' in refused.text and given.replace('"', "&#34;") in refused.text
    refused = await client.post("/topologies/plan-write/run", data={"input": "{}", "runner": "nope"})
    assert refused.status_code == 400 and "nope" in refused.text
    assert (await client.get("/v1/executions")).json()["total"] == before  # nothing half-made


async def test_filters_and_paging(server):
    client = server.client
    await make_team(client)
    ids = [await run(client, "plan-write", f"task {n}") for n in range(26)]
    other = await run(client, "panel")
    for execution_id in [*ids, other]:
        await finished(client, execution_id)
    first = await client.get("/", params={"topology": "plan-write"})
    assert "26 executions" in first.text and "page 1 of 2" in first.text
    assert first.text.count('<tr data-id="') == 25 and other not in first.text
    second = await client.get("/", params={"topology": "plan-write", "page": 2})
    assert second.text.count('<tr data-id="') == 1 and ids[0] in second.text  # oldest last
    rows = await client.get("/", params={"status": "failed", "fragment": "rows"})
    assert "<html" not in rows.text and "No executions match these filters" in rows.text


async def test_approve_a_paused_run_from_its_page(server):
    client = server.client
    await make_team(client)
    execution_id = await run(client, "gated", "Publish it")
    assert (await finished(client, execution_id))["status"] == "paused"
    page = (await client.get(f"/executions/{execution_id}")).text
    assert "Waiting for you: approval" in page
    assert re.search(r'<button type="submit" name="choice" value="approve"', page)
    assert re.search(r'<button type="submit" name="choice" value="reject"', page)
    request_id = f"{execution_id}:pipeline.1:publish~23human-after"
    assert f'value="{request_id}"' in page
    answered = await client.post(
        f"/executions/{execution_id}/respond", data={"request_id": request_id, "choice": "approve"}
    )
    assert answered.status_code == 303 and "answered" in answered.headers["location"]
    done = await finished(client, execution_id)
    assert done["status"] == "completed" and done["attempts"] == 2
    again = await client.post(
        f"/executions/{execution_id}/respond", data={"request_id": request_id, "choice": "approve"}
    )
    assert again.status_code == 303 and "notice=" in again.headers["location"]  # already answered


async def test_cancel_then_resume_from_the_page(start_app, db_url, doubles: Doubles):
    doubles.latency = 30
    server = await start_app(db_url)
    client = server.client
    await make_team(client)
    execution_id = await run(client, "slow-two")

    async def first_step_running() -> str | None:
        text = (await client.get(f"/executions/{execution_id}")).text
        return text if node_classes(text)["pipeline/0:s0"] == "node kind-step s-running" else None

    page = await eventually_async(first_step_running, "the first step to run")
    assert 'id="cancel"' in page and 'class="bar s-running"' in page and "data-start=" in page
    cancelled = await client.post(f"/executions/{execution_id}/cancel")
    assert cancelled.status_code == 303
    assert (await finished(client, execution_id, 10))["status"] == "cancelled"
    page = (await client.get(f"/executions/{execution_id}")).text
    assert 'id="resume"' in page and 'id="cancel"' not in page
    resumed = await client.post(f"/executions/{execution_id}/resume")
    assert resumed.status_code == 303 and "resume+queued" in resumed.headers["location"]
    await eventually_async(lambda: running(client, execution_id), "the resumed run")


async def test_text_streams_over_sse_before_the_step_completes(start_app, db_url, doubles: Doubles):
    doubles.words, doubles.stream.chunk_delay = 6, 0.1
    server = await start_app(db_url)
    client = server.client
    await make_team(client)
    execution_id = await run(client, "streaming")
    following = asyncio.create_task(client.get(f"/v1/executions/{execution_id}/events"))  # to its end

    async def partial_text() -> str | None:  # a page opened mid-step shows the text so far
        text = (
            await client.get(f"/executions/{execution_id}/panel", params={"step": "pipeline/1:second"})
        ).text
        return text if "word2" in text else None

    partial = await eventually_async(partial_text, "the second step's first words", every=0.05)
    response = await following
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
    steps = {s["key"]: s for s in (await client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]}
    for key in ("pipeline/0:first", "pipeline/1:second"):
        kinds = [(e["event"], e.get("kind")) for e in events if e.get("key") == key]
        done = kinds.index(("step", "completed"))
        assert kinds.count(("delta", None)) == 6 and all(k == ("delta", None) for k in kinds[1:done])
        text = "".join(e["text"] for e in events if e["event"] == "delta" and e["key"] == key)
        assert text == steps[key]["response"]
    assert "Response, as it is written" in partial
    assert re.search(r'data-stream-key="pipeline/1:second" aria-live="polite">word0 word1 word2', partial)


async def test_sign_in_with_the_token(start_app, db_url):
    server = await start_app(db_url, token="s3cret-token")
    async with server.new_client() as browser:
        first = await browser.get("/executions/x?step=a")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=" + quote("/executions/x?step=a", safe="")
        assert (await browser.get("/v1/executions")).status_code == 401  # the API answers, no redirect
        assert (await browser.get("/login")).status_code == 200
        wrong = await browser.post("/login", data={"token": "nope", "next": "/topologies"})
        assert wrong.status_code == 401 and "not this server" in wrong.text and not browser.cookies
        right = await browser.post("/login", data={"token": "s3cret-token", "next": "/topologies"})
        assert right.status_code == 303 and right.headers["location"] == "/topologies"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "s3cret-token" not in cookie and "Max-Age=43200" in cookie  # a session id, 12 h
        assert (await browser.get("/topologies")).status_code == 200
        assert (await browser.get("/v1/executions")).status_code == 200  # the page's script uses the API
        assert (await browser.post("/logout")).status_code == 303
        assert (await browser.get("/")).status_code == 303
    async with server.new_client() as browser:
        link = await browser.get("/login", params={"token": "s3cret-token", "next": "//evil.example/"})
        assert link.status_code == 303 and link.headers["location"] == "/"
        assert (await browser.get("/")).status_code == 200
    client = server.client  # bearer clients are unchanged
    assert (await client.get("/v1/executions")).status_code == 200
    assert (await client.get("/")).status_code == 200


async def _signed_in(server: App, client: httpx.AsyncClient) -> str:
    answer = await client.post("/login", data={"token": "s3cret-token"})
    assert answer.status_code == 303, answer.text
    return client.cookies[CONSOLE_COOKIE]


def _with_cookie(server: App, value: str) -> httpx.AsyncClient:
    """A browser that only has a copy of a cookie."""
    return server.new_client(cookies={CONSOLE_COOKIE: value})


async def test_a_console_session_is_random_ends_at_logout_and_expires(start_app, db_url):
    server = await start_app(db_url, token="s3cret-token", console_session_seconds=0.5)
    async with server.new_client() as first, server.new_client() as second:
        one, two = await _signed_in(server, first), await _signed_in(server, second)
        assert one != two and len(one) >= 40  # 32 random bytes each, no digest of the token
        await first.post("/logout")
        async with _with_cookie(server, one) as copy:
            assert (await copy.get("/")).status_code == 303  # logout ended the session on the server
            assert (await copy.get("/v1/executions")).status_code == 401
        async with _with_cookie(server, two) as copy:
            assert (await copy.get("/")).status_code == 200  # the other browser's session goes on
        await asyncio.sleep(0.6)
        async with _with_cookie(server, two) as copy:
            assert (await copy.get("/")).status_code == 303  # expired
    restarted = await start_app(db_url, token="s3cret-token")
    async with restarted.new_client() as browser:
        fresh = await _signed_in(restarted, browser)
    async with _with_cookie(restarted, fresh) as copy:
        assert (await copy.get("/")).status_code == 200
    async with _with_cookie(server, fresh) as copy:
        assert (await copy.get("/")).status_code == 303  # sessions belong to the process that made them


async def test_failed_sign_ins_are_limited_per_address(start_app, db_url):
    server = await start_app(db_url, token="s3cret-token", login_attempts_per_minute=3)

    def browser(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=server.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    async with browser("10.0.0.7") as guesser, browser("10.0.0.8") as other:
        for guess in range(3):
            assert (await guesser.post("/login", data={"token": f"guess-{guess}"})).status_code == 401
        refused = await guesser.post("/login", data={"token": "s3cret-token"})
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        assert "too many failed sign-ins" in refused.text
        link = await guesser.get("/login", params={"token": "guess-4"})
        assert link.status_code == 429  # the sign-in link counts too
        assert (await other.post("/login", data={"token": "s3cret-token"})).status_code == 303


async def test_posts_from_other_sites_are_refused(server):
    client = server.client
    await make_team(client)
    before = (await client.get("/v1/executions")).json()["total"]
    form = {"input": '{"prompt": "x"}', "runner": "local"}
    evil = await client.post(
        "/topologies/plan-write/run", data=form, headers={"Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and "another site" in evil.json()["detail"]
    api = await client.post(
        "/v1/topologies/plan-write/run", json={"input": {}}, headers={"Origin": "http://evil.example"}
    )
    assert api.status_code == 403
    assert (await client.get("/v1/executions")).json()["total"] == before
    same = await client.post(
        "/topologies/plan-write/run", data=form, headers={"Origin": str(client.base_url)}
    )
    assert same.status_code == 303


async def test_the_page_of_a_thousand_step_execution_renders_every_step(start_app, db_url):
    """Every step drawn once (how fast it renders is printed; speed targets live in bench/)."""
    members = {
        f"m{n:04d}": AgentType(name="member", role="analyst", config={"model": "test"}) for n in range(1000)
    }
    topology = Topology(name="wide", topology_type="ensemble", config={"aggregation_method": "vote"})
    result = await AsyncRunner(db_url=db_url, max_concurrent=50).run(topology, members, {"prompt": "Count"})
    assert result.status == "completed", result.error
    server = await start_app(db_url)
    client = server.client
    url = f"/executions/{result.execution_id}"
    assert (await client.get(url)).status_code == 200  # warm
    started = time.perf_counter()
    page = await client.get(url)
    seconds = time.perf_counter() - started
    assert page.status_code == 200 and page.text.count('class="bar s-completed"') == 1000
    assert len(node_classes(page.text)) == 1003
    print(f"1,000-step execution page: {seconds * 1000:.0f} ms, {len(page.text) / 1e6:.1f} MB")


async def test_answer_a_free_text_request_from_the_page(server):
    client = server.client
    await make_team(client)
    agent = {
        "name": "asker",
        "role": "writer",
        "config": {
            "model": "test",
            "capabilities": ["human_in_loop"],
            "mixins": {"human_in_loop": {"when": "before", "options": [], "prompt": "Which audience?"}},
        },
    }
    assert (await client.post("/v1/agents", json=agent)).status_code == 201
    topology = {"name": "ask", "type": "pipeline", "agents": {"write": "asker"}}
    assert (await client.post("/v1/topologies", json=topology)).status_code == 201
    execution_id = await run(client, "ask", "Write a note")
    assert (await finished(client, execution_id))["status"] == "paused"
    page = (await client.get(f"/executions/{execution_id}")).text
    assert "Which audience?" in page and '<label for="answer-1">Your answer</label>' in page
    assert 'name="choice"' not in page
    request_id = re.search(r'name="request_id" value="([^"]+)"', page).group(1)
    empty = await client.post(
        f"/executions/{execution_id}/respond", data={"request_id": request_id, "text": "  "}
    )
    assert "write+an+answer" in empty.headers["location"]
    answered = await client.post(
        f"/executions/{execution_id}/respond", data={"request_id": request_id, "text": "engineers"}
    )
    assert answered.status_code == 303
    assert (await finished(client, execution_id))["status"] == "completed"
    human = (await client.get(f"/v1/human/requests/{quote(request_id, safe='')}")).json()
    assert human["response"]["response"] == "engineers" and human["response"]["responded_by"] == "console"


HOSTILE = (
    "**Rivers** flow to the sea.\n\n"
    "<script>alert(1)</script>\n\n"
    "[x](javascript:alert(1)) and [docs](https://example.com/rivers) <img src=x onerror=alert(2)>"
)


@pytest.fixture
def hostile_model():
    from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model

    model = ScriptedModel(replies=lambda prompt, index: HOSTILE, name="scripted:hostile")
    register_model("scripted:hostile", model.model)
    yield "scripted:hostile"
    unregister_model("scripted:hostile")


async def test_the_page_leads_with_the_answer_as_safe_markdown_and_the_json_behind_a_toggle(
    server, hostile_model
):
    client = server.client
    agent = {"name": "hostile", "role": "writer", "config": {"model": hostile_model}}
    assert (await client.post("/v1/agents", json=agent)).status_code == 201
    topology = {"name": "one", "type": "pipeline", "agents": {"write": "hostile"}}
    assert (await client.post("/v1/topologies", json=topology)).status_code == 201
    execution_id = await run(client, "one")
    execution = await finished(client, execution_id)
    assert execution["status"] == "completed"

    page = (await client.get(f"/executions/{execution_id}")).text
    answer = re.search(r'<div class="rendered" id="answer">(.*?)</div>', page, re.S)
    assert answer is not None
    html = answer.group(1)
    assert "<strong>Rivers</strong> flow to the sea." in html  # Markdown, rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # raw HTML from the model shows as text
    assert "<script" not in html and "<img" not in html
    assert 'href="javascript' not in html and "[x](javascript:alert(1))" in html  # not a link
    assert '<a href="https://example.com/rivers" rel="noopener noreferrer nofollow">docs</a>' in html
    assert page.index('id="answer"') < page.index('id="diagram-title"')  # the page leads with it
    raw = re.search(r'<details class="raw"><summary>Output as JSON</summary><pre class="output">', page)
    assert raw is not None and page.index('id="answer"') < raw.start()
    assert "&lt;script&gt;" in page[raw.end() :]  # the JSON is escaped too


async def test_the_totals_count_finished_steps_while_the_run_goes(server, doubles):
    client = server.client
    await make_team(client)
    doubles.latency = 0.4
    execution_id = await run(client, "slow-three")

    async def one_step_done() -> list | None:
        steps = (await client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
        return steps if steps and await running(client, execution_id) else None

    steps = await eventually_async(one_step_done, "a finished step while the run goes", 30)
    live = (await client.get(f"/executions/{execution_id}/live")).text
    shown = re.search(r'<dd id="totals-tokens">([^<]*)</dd>', live).group(1)
    assert shown != "0 in / 0 out" and str(steps[0]["input_tokens"]) in shown.replace(",", "")
    done = await finished(client, execution_id)
    page = (await client.get(f"/executions/{execution_id}")).text
    shown = re.search(r'<dd id="totals-tokens">([^<]*)</dd>', page).group(1)
    assert str(done["input_tokens"]) in shown.replace(",", "")
