"""Evals over the server's doors, in this process: `GET /v1/evals...`, the console's eval pages and MCP's
`list_evals`, over executions the `test` model really ran and the eval rows that score them."""

from __future__ import annotations

import re
import uuid

import pytest
from eval_data import record_eval, small_eval
from mcp_sessions import error_text, in_process_session, payload
from serving import App
from team import finished, make_team, run


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url)


async def test_the_api_lists_evals_and_pages_through_the_matrix(server):
    eval_id, executions = await small_eval(server.client, server.db_url)
    listed = (await server.client.get("/v1/evals")).json()
    assert listed["total"] == 1 and listed["count"] == 1
    [summary] = listed["evals"]
    assert summary["id"] == eval_id and summary["status"] == "completed"
    assert summary["variants"] == ["plan-write", "panel"]
    assert (summary["samples"], summary["cells"], summary["unscored"]) == (2, 4, 1)

    matrix = (await server.client.get(f"/v1/evals/{eval_id}/samples")).json()
    assert matrix["columns"] == [{"variant": "plan-write", "repeat": 0}, {"variant": "panel", "repeat": 0}]
    assert [row["sample_id"] for row in matrix["rows"]] == ["s1", "s2"] and matrix["total"] == 2
    s1 = matrix["rows"][0]["cells"]
    assert [c["score"] for c in s1] == [1.0, 0.0] and s1[1]["explanation"] == "expected 4, got 5"
    assert s1[0]["execution_id"] == executions["s1", "plan-write"] and s1[0]["status"] == "completed"
    # the cells' executions carry the eval's id
    execution = (await server.client.get(f"/v1/executions/{executions['s2', 'panel']}")).json()
    assert execution["eval_id"] == eval_id

    second = (
        await server.client.get(f"/v1/evals/{eval_id}/samples", params={"limit": 1, "offset": 1})
    ).json()
    assert [row["sample_id"] for row in second["rows"]] == ["s2"] and second["count"] == 1
    assert second["rows"][0]["cells"][1]["score"] is None

    missing = await server.client.get("/v1/evals/nope/samples")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert "eval 'nope' not found" in missing.json()["detail"]
    assert (await server.client.get("/v1/evals", params={"limit": 0})).status_code == 422


async def test_an_eval_of_many_samples_reads_a_page_at_a_time_in_natural_order(server):
    await make_team(server.client)
    execution_id = uuid.UUID(await run(server.client, "plan-write"))
    await finished(server.client, str(execution_id))
    cells = [
        {
            "sample_id": f"q{n}",
            "variant": variant,
            "repeat": repeat,
            "execution_id": execution_id,
            "score": n % 2,
        }
        for n in range(1, 251)
        for variant in ("a", "b")
        for repeat in (0, 1)
    ]
    await record_eval(server.db_url, "ev-big", cells, status="running")
    page = (await server.client.get("/v1/evals/ev-big/samples", params={"limit": 100, "offset": 100})).json()
    assert page["total"] == 250 and page["count"] == 100
    assert [row["sample_id"] for row in page["rows"]][:3] == ["q101", "q102", "q103"]  # q101, not q1000
    assert [(c["variant"], c["repeat"]) for c in page["columns"]] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [c["score"] for c in page["rows"][0]["cells"]] == [1.0] * 4

    html = (await server.client.get("/evals/ev-big", params={"page": 3})).text
    assert "page 3 of 3" in html and html.count('<tr data-sample="') == 50
    assert 'data-sample="q201"' in html and 'data-sample="q200"' not in html
    assert html.count('class="cell tone-') == 200 and "#2</span>" in html  # a column per repeat


async def test_the_console_shows_the_matrix_coloured_and_told_in_text_with_links(server):
    eval_id, executions = await small_eval(server.client, server.db_url)
    listing = await server.client.get("/evals")
    assert listing.status_code == 200 and f'href="/evals/{eval_id}"' in listing.text
    assert '<a href="/evals" aria-current="page">Evals</a>' in listing.text
    assert "plan-write, panel" in listing.text

    page = await server.client.get(f"/evals/{eval_id}")
    assert page.status_code == 200
    linked = re.findall(r'<td class="cell (tone-\w+)"[^>]*>\s*<a href="/executions/([0-9a-f-]+)"', page.text)
    cells = {execution: tone for tone, execution in linked}
    assert len(linked) == 4 and cells == {
        executions["s2", "panel"]: "tone-none",
        executions["s1", "plan-write"]: "tone-pass",
        executions["s1", "panel"]: "tone-fail",
        executions["s2", "plan-write"]: "tone-pass",
    }
    assert 'title="sample s1, panel: score 0.00: expected 4, got 5"' in page.text  # told in text, not colour
    assert 'title="sample s2, panel: no score (completed)"' in page.text
    assert f'href="/executions/{executions["s2", "panel"]}"' in page.text

    opened = await server.client.get(f"/executions/{executions['s1', 'panel']}")
    assert opened.status_code == 200
    missing = await server.client.get("/evals/nope")
    assert missing.status_code == 404 and "eval &#39;nope&#39; not found" in missing.text
    empty = await server.client.get("/evals", params={"page": 2})
    assert empty.status_code == 200


async def test_mcp_lists_evals_and_names_an_unknown_one(server):
    eval_id, _ = await small_eval(server.client, server.db_url)
    async with in_process_session(server.app) as session:
        listed = payload(await session.call_tool("list_evals", {}))
        unknown = await session.call_tool("get_eval", {"eval_id": "nope"})
    assert [e["id"] for e in listed] == [eval_id] and listed[0]["cells"] == 4
    assert "eval 'nope' not found" in error_text(unknown)
