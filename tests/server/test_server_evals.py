"""Evals over the server's doors, in this process: `GET /v1/evals...`, the console's eval pages and MCP's
`list_evals` and `get_eval`, over a real `qmcp eval` run (scripted models) and a large eval's rows."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from typing import Any

import pytest
from _eventually import eventually_async
from eval_data import SCORES, real_eval, record_eval
from mcp_sessions import error_text, in_process_session, payload
from serving import App
from sqlalchemy import delete
from sqlmodel import col
from team import finished, make_team, run

from qmcp.agentframework.models import AgentConfig, AgentType, EvalScore, Topology
from qmcp.agentframework.store import Database
from qmcp.app import Caller
from qmcp.eval import EvalRequest, EvalSpec, VariantSpec, resume_eval, start_eval


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url)


async def test_the_api_lists_evals_reports_one_and_pages_through_its_matrix(server, scripted):
    eval_id, executions = await real_eval(server.db_url, scripted)
    listed = (await server.client.get("/v1/evals")).json()
    assert listed["total"] == 1 and listed["count"] == 1
    [summary] = listed["evals"]
    assert summary["id"] == eval_id and summary["status"] == "completed"
    assert summary["variants"] == ["alpha", "beta"]
    assert (summary["samples"], summary["planned"], summary["cells"], summary["unscored"]) == (4, 8, 8, 1)

    report = (await server.client.get(f"/v1/evals/{eval_id}")).json()
    alpha, beta = report["variants"]
    assert (alpha["variant"], alpha["n"], alpha["accuracy"], alpha["failures"]) == ("alpha", 4, 0.75, 0)
    assert (beta["accuracy"], beta["failures"], beta["interval_method"]) == (0.5, 1, "wilson")
    [pair] = report["pairs"]
    assert (pair["a"], pair["b"], pair["n"], pair["test"]) == ("alpha", "beta", 4, "mcnemar")
    assert (pair["only_a"], pair["only_b"]) == (1, 0) and pair["difference"] == pytest.approx(-0.25)
    assert report["rows"] is None  # the cells are paged by /samples

    matrix = (await server.client.get(f"/v1/evals/{eval_id}/samples")).json()
    assert matrix["columns"] == [{"variant": "alpha", "repeat": 0}, {"variant": "beta", "repeat": 0}]
    assert [row["sample_id"] for row in matrix["rows"]] == ["q0", "q1", "q2", "q3"] and matrix["total"] == 4
    cells = {(row["sample_id"], c["variant"]): c for row in matrix["rows"] for c in row["cells"]}
    assert {key: cell["score"] for key, cell in cells.items()} == SCORES
    assert {key: cell["execution_id"] for key, cell in cells.items()} == executions
    assert cells["q3", "beta"]["status"] == "failed" and cells["q0", "alpha"]["status"] == "completed"
    assert "no idea" in cells["q1", "beta"]["explanation"]
    execution = (await server.client.get(f"/v1/executions/{executions['q1', 'beta']}")).json()
    assert execution["eval_id"] == eval_id  # the cell is an ordinary execution of the eval
    cells_listed = (await server.client.get("/v1/executions", params={"eval_id": eval_id})).json()
    assert {e["id"] for e in cells_listed["executions"]} == set(executions.values())
    assert (await server.client.get("/v1/executions", params={"eval_id": "other"})).json()["total"] == 0

    page = (await server.client.get(f"/v1/evals/{eval_id}/samples", params={"limit": 1, "offset": 3})).json()
    assert [row["sample_id"] for row in page["rows"]] == ["q3"] and page["count"] == 1 and page["total"] == 4

    for path in ("/v1/evals/nope", "/v1/evals/nope/samples"):
        missing = await server.client.get(path)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["detail"] == "eval 'nope' not found; list them with: qmcp eval list"
    assert (await server.client.get("/v1/evals", params={"limit": 0})).status_code == 422
    assert (await server.client.post("/v1/evals", json={})).status_code == 405  # read only: no remote start


async def test_a_large_eval_reads_a_page_of_samples_at_a_time_in_the_datasets_order(server):
    await make_team(server.client)
    execution_id = uuid.UUID(await run(server.client, "plan-write"))
    await finished(server.client, str(execution_id))
    order = [f"q{n}" for n in range(250, 0, -1)]  # the dataset's order, not the ids' order
    spec = EvalSpec(
        samples=[{"id": sample, "input": "x", "target": "y"} for sample in order],
        source="records",
        variants=[VariantSpec(name=name, kind="topology", digest="d") for name in ("b", "a")],
        scorer="exact",
        repeat=2,
    )
    cells = [  # a running eval: the first 200 samples recorded
        {
            "sample_id": sample,
            "variant": variant,
            "repeat": repeat,
            "execution_id": execution_id,
            "score": 1.0,
        }
        for sample in order[:200]
        for variant in ("a", "b")
        for repeat in (0, 1)
    ]
    await record_eval(server.db_url, "ev-big", cells, spec.model_dump(mode="json"))
    page = (await server.client.get("/v1/evals/ev-big/samples", params={"limit": 100, "offset": 100})).json()
    assert page["total"] == 250 and page["count"] == 100
    assert [row["sample_id"] for row in page["rows"]][:2] == ["q150", "q149"]
    assert [(c["variant"], c["repeat"]) for c in page["columns"]] == [("b", 0), ("b", 1), ("a", 0), ("a", 1)]
    assert [c["score"] for c in page["rows"][0]["cells"]] == [1.0] * 4

    html = (await server.client.get("/evals/ev-big", params={"page": 3})).text
    assert "page 3 of 3" in html and html.count('<tr data-sample="') == 50
    assert 'data-sample="q50"' in html and 'data-sample="q51"' not in html
    assert html.count('class="cell tone-pass"') == 0 and html.count('class="cell tone-missing"') == 200
    assert 'title="sample q50, b repeat 1: not run yet"' in html
    first = (await server.client.get("/evals/ev-big")).text
    assert first.count('class="cell tone-pass"') == 400 and "#2</span>" in first  # a column per repeat
    assert "800 of 1000" in first  # the report: cells recorded of planned
    # Stored `running`, but no live process runs any of its cells (the engine was killed): it reads
    # interrupted, and its page is not read again. A live eval's is: test_a_running_cell_shows_...
    assert 'data-live="no"' in first and "interrupted" in first


async def test_the_console_shows_the_report_and_the_matrix_coloured_and_told_in_text(server, scripted):
    eval_id, executions = await real_eval(server.db_url, scripted)
    listing = await server.client.get("/evals")
    assert listing.status_code == 200 and f'href="/evals/{eval_id}"' in listing.text
    assert '<a href="/evals" aria-current="page">Evals</a>' in listing.text
    assert "alpha, beta" in listing.text and "8 of 8</td>" in listing.text

    page = await server.client.get(f"/evals/{eval_id}")
    assert page.status_code == 200 and 'data-live="no"' in page.text
    report = re.search(r'<table class="grid report" id="report">.*?</table>', page.text, re.S)
    assert report is not None
    assert re.search(
        r"<th scope=\"row\">alpha</th><td>4</td><td>75.0 %</td><td>[\d.]+ % – [\d.]+ % \(wilson\)", report[0]
    )
    assert '<th scope="row">beta against alpha</th><td>4</td><td>-25.0 pts</td>' in page.text
    assert "mcnemar (1 vs 0 discordant)" in page.text

    linked = re.findall(r'<td class="cell (tone-\w+)"[^>]*>\s*<a href="/executions/([0-9a-f-]+)"', page.text)
    tones = {execution: tone for tone, execution in linked}
    assert len(linked) == 8
    assert tones[executions["q0", "alpha"]] == "tone-pass" and tones[executions["q1", "beta"]] == "tone-fail"
    assert tones[executions["q3", "beta"]] == "tone-none"
    assert 'title="sample q3, beta: no score (failed)' in page.text  # told in text, not colour alone
    assert re.search(r'title="sample q1, beta: score 0\.00: [^"]*no idea', page.text)

    opened = await server.client.get(f"/executions/{executions['q1', 'beta']}")
    assert opened.status_code == 200 and "no idea" in opened.text
    assert f'A cell of eval <a href="/evals/{eval_id}">' in opened.text  # and back to its eval
    missing = await server.client.get("/evals/nope")
    assert missing.status_code == 404 and "eval &#39;nope&#39; not found" in missing.text
    assert (await server.client.get("/evals", params={"page": 2})).status_code == 200
    for path in ("/evals", f"/evals/{eval_id}"):
        far = await server.client.get(path, params={"page": 10**12})
        assert (
            far.status_code == 400
            and "offset must be between 0 and" in far.text
            and 'role="alert"' in far.text
        )


async def test_mcp_lists_evals_reports_one_and_names_an_unknown_one(server, scripted):
    eval_id, _ = await real_eval(server.db_url, scripted)
    async with in_process_session(server.app) as session:
        listed = payload(await session.call_tool("list_evals", {}))
        report = payload(await session.call_tool("get_eval", {"eval_id": eval_id}))
        unknown = await session.call_tool("get_eval", {"eval_id": "nope"})
    assert [e["id"] for e in listed] == [eval_id] and listed[0]["cells"] == 8
    assert [v["accuracy"] for v in report["variants"]] == [0.75, 0.5] and report["pairs"][0]["n"] == 4
    assert error_text(unknown) == "eval 'nope' not found; list them with: qmcp eval list"


async def test_a_stopped_evals_report_is_kept_until_the_eval_runs_again(server, scripted):
    eval_id, _ = await real_eval(server.db_url, scripted)
    first = (await server.client.get(f"/v1/evals/{eval_id}")).json()
    assert first["recorded"] == 8
    async with Database(server.db_url) as db, db.sessions() as session, session.begin():
        await session.exec(
            delete(EvalScore).where(col(EvalScore.sample_id) == "q0", col(EvalScore.variant) == "alpha")
        )
    assert (await server.client.get(f"/v1/evals/{eval_id}")).json() == first  # kept: the eval has not run
    async with Database(server.db_url) as db:  # it runs again: the missing cell is scored from its output
        assert (await resume_eval(db, eval_id, Caller.operator())).status == "completed"
    again = (await server.client.get(f"/v1/evals/{eval_id}")).json()
    assert again["recorded"] == 8 and again["completed_at"] != first["completed_at"]
    assert again["variants"] == first["variants"]  # nothing new paid, the same scores


async def test_a_running_cell_shows_its_execution_before_it_is_scored(server, scripted):
    slow, _ = scripted(replies=["answer 0"], latency=60)
    created: list[str] = []
    async with Database(server.db_url) as db:
        agent = AgentType(name="slow-solver", role="writer", config=AgentConfig(model=slow).model_dump())
        await db.save_team(Topology(name="slow", topology_type="pipeline", config={}), {"solve": agent})
        records = [{"id": f"q{i}", "input": f"solve item {i}", "target": f"answer {i}"} for i in range(2)]
        request = EvalRequest(records=records, topologies=["slow"], max_concurrent=1)
        running = asyncio.create_task(start_eval(db, request, Caller.operator(), on_created=created.append))
        try:

            async def first_cell_running() -> dict[str, Any] | None:
                if not created:
                    return None
                matrix = (await server.client.get(f"/v1/evals/{created[0]}/samples")).json()
                cell = matrix["rows"][0]["cells"][0]
                return matrix if cell["status"] == "running" else None

            matrix = await eventually_async(first_cell_running, "the first cell's execution to run", 30)
            first, second = (row["cells"][0] for row in matrix["rows"])
            assert (first["scored"], first["score"]) == (False, None) and first["execution_id"]
            assert (second["scored"], second["execution_id"], second["status"]) == (False, None, None)
            page = (await server.client.get(f"/evals/{created[0]}")).text
            assert 'data-live="yes"' in page
            assert re.search(
                rf'<td class="cell tone-running"[^>]*>\s*<a href="/executions/{first["execution_id"]}" '
                r'title="sample q0, slow: not scored yet \(running\)"',
                page,
            )
            assert 'title="sample q1, slow: not run yet"' in page
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
