"""The console's time travel, in this process: the "Fork from here" form (render, submit, policy
refusal, cross-site refusal), the lineage on the execution page and the comparison page."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
import pytest
from doubles import Doubles
from serving import App
from team import finished, make_team, run

ARTICLE = {
    "name": "article",
    "type": "pipeline",
    "agents": {"plan": "planner-s", "write": "writer-s", "review": "reviewer-s"},
}
PLAN, WRITE, REVIEW = "pipeline/0:plan", "pipeline/1:write", "pipeline/2:review"


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url, allowed_models=("test",))


async def _article(client: httpx.AsyncClient) -> str:
    """A finished three-step pipeline on `scripted:slow` (it records each paid call's role); its id."""
    await make_team(client)
    for name, role in (("planner-s", "planner"), ("writer-s", "writer"), ("reviewer-s", "reviewer")):
        agent = {"name": name, "role": role, "config": {"model": "scripted:slow"}}
        assert (await client.post("/v1/agents", json=agent)).status_code == 201
    assert (await client.post("/v1/topologies", json=ARTICLE)).status_code == 201
    execution_id = await run(client, "article", "Write about rivers")
    assert (await finished(client, execution_id))["status"] == "completed"
    return execution_id


async def _steps(client: httpx.AsyncClient, execution_id: str) -> dict[str, dict[str, Any]]:
    steps = (await client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
    return {step["key"]: step for step in steps}


def _fields(page: str) -> dict[str, str]:
    """The form's fields as the page fills them in (what a browser would send untouched)."""
    fields = {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }
    for name, text in re.findall(r'<textarea [^>]*name="([^"]+)"[^>]*>\n?(.*?)</textarea>', page, re.S):
        fields[html.unescape(name)] = html.unescape(text).replace("\n", "\r\n")  # as browsers send it
    for name, body in re.findall(r'<select [^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', body) or re.search(
            r'<option value="([^"]*)"', body
        )
        fields[html.unescape(name)] = html.unescape(chosen.group(1)) if chosen else ""
    return fields


async def test_the_fork_form_shows_the_step_the_models_the_agents_and_the_replies(server):
    client = server.client
    execution_id = await _article(client)
    page = (await client.get(f"/executions/{execution_id}")).text
    for key in (PLAN, WRITE, REVIEW):  # every step offers a fork
        assert (
            f'href="/executions/{execution_id}/fork?at={key.replace("/", "%2F").replace(":", "%3A")}"' in page
        )

    form = await client.get(f"/executions/{execution_id}/fork", params={"at": WRITE})
    assert form.status_code == 200
    text = form.text
    assert f"from <code>{WRITE}</code>" in text and "reuses the 1 recorded step before" in text
    assert '<label for="fork-model">' in text and '<option value="test" >test</option>' in text
    assert "Models this server lets you choose: <code>test</code>" in text
    slots = re.findall(r'<select id="fork-agent-\d+" name="agent:([^"]+)">', text)
    assert slots == ["plan", "write", "review"]
    assert (
        "as recorded: writer-s" in text and '<option value="writer-a" >writer-a (stored now)</option>' in text
    )
    steps = await _steps(client, execution_id)
    fields = _fields(text)
    assert fields["at"] == WRITE and fields["model"] == "" and fields["agent:write"] == ""
    assert set(k for k in fields if k.startswith("output:")) == {f"output:{PLAN}", f"output:{WRITE}"}
    assert fields[f"output:{PLAN}"].replace("\r\n", "\n") == steps[PLAN]["response"]
    assert json.loads(fields["input"]) == {"prompt": "Write about rivers"}

    panel = (await client.get(f"/executions/{execution_id}/panel", params={"step": WRITE})).text
    assert re.search(
        rf'<a class="fork" href="/executions/{execution_id}/fork\?at=pipeline%2F1%3Awrite" id="panel-fork">',
        panel,
    )
    missing = await client.get(f"/executions/{execution_id}/fork", params={"at": "pipeline/9:nope"})
    assert missing.status_code == 404 and "pipeline/9:nope" in missing.text


async def test_a_submitted_fork_runs_from_its_step_with_the_edited_reply_and_opens_its_page(
    server, doubles: Doubles
):
    client = server.client
    execution_id = await _article(client)
    parent = await _steps(client, execution_id)
    doubles.paid.clear()
    form = (await client.get(f"/executions/{execution_id}/fork", params={"at": WRITE})).text
    fields = _fields(form) | {f"output:{PLAN}": "Plan: three rivers,\r\none paragraph each"}
    started = await client.post(f"/executions/{execution_id}/fork", data=fields)
    assert started.status_code == 303, started.text
    fork_id = started.headers["location"].rsplit("/", 1)[-1]
    fork = await finished(client, fork_id)
    assert fork["status"] == "completed" and fork["origin"] == "console"
    assert fork["parent_id"] == execution_id and fork["fork_key"] == WRITE
    assert doubles.paid == ["writer", "reviewer"]  # the plan was inherited, not paid again
    steps = await _steps(client, fork_id)
    assert steps[PLAN]["inherited"] and steps[PLAN]["response"] == "Plan: three rivers,\none paragraph each"
    assert not steps[WRITE]["inherited"] and not steps[REVIEW]["inherited"]
    prompt = json.dumps(steps[WRITE]["request"])
    assert "three rivers" in prompt and parent[PLAN]["response"].split("\n")[0] not in prompt

    page = (await client.get(f"/executions/{fork_id}")).text
    forked_from = re.search(r'<p id="forked-from">(.*?)</p>', page, re.S).group(1)
    assert f'href="/executions/{execution_id}"' in forked_from and f"<code>{WRITE}</code>" in forked_from
    assert f'href="/executions/{fork_id}/diff"' in forked_from  # compare with parent
    marks = dict(re.findall(r'data-step="([^"]+)">.*?</a>.*?(?:data-mark="(\w+)"|</tr>)', page, re.S))
    assert marks == {PLAN: "edited", WRITE: "", REVIEW: ""}
    parent_page = (await client.get(f"/executions/{execution_id}")).text
    forks = re.search(r'<ul id="forks">(.*?)</ul>', parent_page, re.S).group(1)
    assert f'href="/executions/{fork_id}"' in forks and f"<code>{WRITE}</code>" in forks


async def test_only_changed_replies_and_choices_are_sent(server, doubles: Doubles):
    client = server.client
    execution_id = await _article(client)
    form = (await client.get(f"/executions/{execution_id}/fork", params={"at": REVIEW})).text
    fields = _fields(form) | {"agent:write": "writer-a"}  # the replies sent back as they were (CR LF)
    started = await client.post(f"/executions/{execution_id}/fork", data=fields)
    assert started.status_code == 303, started.text
    fork_id = started.headers["location"].rsplit("/", 1)[-1]
    assert (await finished(client, fork_id))["status"] == "completed"
    steps = await _steps(client, fork_id)
    assert [k for k, s in steps.items() if s["inherited"]] == [PLAN, WRITE]
    page = (await client.get(f"/executions/{fork_id}")).text
    assert 'data-mark="edited"' not in page and page.count('data-mark="inherited"') == 2
    execution = (await client.get(f"/v1/executions/{fork_id}")).json()
    assert execution["input"] == {"prompt": "Write about rivers"}


async def test_a_refused_fork_shows_the_form_again_with_the_reason_and_writes_nothing(server):
    client = server.client
    execution_id = await _article(client)
    form = _fields((await client.get(f"/executions/{execution_id}/fork", params={"at": WRITE})).text)
    before = (await client.get("/v1/executions")).json()["total"]
    cases = (
        ({"model": "openai:gpt-4.1"}, "is not allowed on this server (allowed: test)"),
        ({"input": "{not json"}, "the input is not valid JSON"),
        ({"input": "[1]"}, "the input must be a JSON object"),
        ({"agent:write": "nobody"}, "agent &#39;nobody&#39; not found"),
        ({f"output:{REVIEW}": "mine"}, "runs again in this fork"),  # after the fork point
    )
    for change, says in cases:
        refused = await client.post(f"/executions/{execution_id}/fork", data=form | change)
        assert refused.status_code in (400, 403, 404), refused.text
        problem = re.search(r'<p class="problem" role="alert" id="fork-problem">(.*?)</p>', refused.text)
        assert problem is not None and says in problem.group(1), refused.text
        assert 'id="fork-form"' in refused.text  # the form again, as it was filled in
    again = await client.post(
        f"/executions/{execution_id}/fork", data=form | {"model": "openai:gpt-4.1", f"output:{PLAN}": "mine"}
    )
    assert ">\nmine</textarea>" in again.text and '<option value="test" >' in again.text
    assert (await client.get("/v1/executions")).json()["total"] == before


async def test_a_fork_posted_from_another_site_is_refused(server):
    client = server.client
    execution_id = await _article(client)
    form = _fields((await client.get(f"/executions/{execution_id}/fork", params={"at": WRITE})).text)
    before = (await client.get("/v1/executions")).json()["total"]
    evil = await client.post(
        f"/executions/{execution_id}/fork", data=form, headers={"Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and "another site" in evil.json()["detail"]
    assert (await client.get("/v1/executions")).json()["total"] == before
    same = await client.post(
        f"/executions/{execution_id}/fork", data=form, headers={"Origin": str(client.base_url)}
    )
    assert same.status_code == 303


async def test_the_comparison_page_shows_each_steps_reply_tokens_and_cost(server):
    client = server.client
    execution_id = await _article(client)
    form = _fields((await client.get(f"/executions/{execution_id}/fork", params={"at": WRITE})).text)
    started = await client.post(
        f"/executions/{execution_id}/fork", data=form | {f"output:{PLAN}": "Plan: only the Danube"}
    )
    fork_id = started.headers["location"].rsplit("/", 1)[-1]
    await finished(client, fork_id)
    page = await client.get(f"/executions/{fork_id}/diff")
    assert page.status_code == 200
    rows = dict(re.findall(r'<tr data-key="([^"]+)" data-change="([^"]+)"', page.text))
    assert rows[PLAN] == "edited" and rows[WRITE] == "changed" and rows[REVIEW] == "changed"
    assert "only the Danube" in page.text
    assert f'href="/executions/{execution_id}"' in page.text and f'href="/executions/{fork_id}"' in page.text

    other = await client.get(f"/executions/{execution_id}/diff")  # not a fork: which one to compare with?
    assert other.status_code == 400 and "?other=" in other.text
    same = await client.get(f"/executions/{execution_id}/diff", params={"other": fork_id})
    assert same.status_code == 200


async def test_on_a_server_that_pins_the_model_the_form_offers_that_one(start_app, db_url):
    client = (await start_app(db_url, model="test")).client
    await make_team(client)
    execution_id = await run(client, "plan-write")
    assert (await finished(client, execution_id))["status"] == "completed"
    form = (await client.get(f"/executions/{execution_id}/fork", params={"at": "pipeline/1:write"})).text
    assert "This server runs every agent on <code>test</code>" in form
    assert re.findall(r'<option value="([^"]*)"', form.split('id="fork-model"')[1].split("</select>")[0]) == [
        "",
        "test",
    ]
    refused = await client.post(
        f"/executions/{execution_id}/fork", data=_fields(form) | {"model": "scripted:slow"}
    )
    assert refused.status_code == 400 and "this server runs every agent on test" in refused.text
