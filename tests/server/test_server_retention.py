"""Retention over HTTP (`POST /v1/executions/prune`: the operator's unless `--allow-remote-prune`) and on
the server's schedule (`QMCP_RETENTION`), in process."""

from __future__ import annotations

import pytest
from _eventually import eventually_async
from team import PROBLEM, finished, make_team, run

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.server import ServerOptions, create_app


async def test_a_client_may_not_prune_unless_the_operator_allows_it(start_app, db_url):
    server = await start_app(db_url, model="test")
    await make_team(server.client)
    execution_id = await run(server.client, "plan-write")
    await finished(server.client, execution_id)
    refused = await server.client.post("/v1/executions/prune", json={"older_than": "0s"})
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    assert "qmcp serve --allow-remote-prune" in refused.json()["detail"]
    assert (await server.client.get(f"/v1/executions/{execution_id}")).status_code == 200


async def test_an_allowed_client_prunes_and_reads_the_report(start_app, db_url):
    server = await start_app(db_url, model="test", allow_remote_prune=True)
    await make_team(server.client)
    execution_id = await run(server.client, "plan-write")
    await finished(server.client, execution_id)
    wrong = await server.client.post("/v1/executions/prune", json={"older_than": "30 days"})
    assert wrong.status_code == 400 and "older_than '30 days' is not a duration" in wrong.json()["detail"]
    unknown = await server.client.post("/v1/executions/prune", json={"older_than": "0s", "everything": True})
    assert unknown.status_code == 422
    dry = (
        await server.client.post("/v1/executions/prune", json={"older_than": "0s", "dry_run": True})
    ).json()
    assert (dry["dry_run"], dry["executions"], dry["steps"]) == (True, 1, 2)
    assert (await server.client.get(f"/v1/executions/{execution_id}")).status_code == 200
    report = await server.client.post("/v1/executions/prune", json={"older_than": "0s"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["executions"], body["steps"], body["usage_rows"]) == (1, 2, 2)
    assert body["bytes_before"] is not None and body["bytes_after"] is not None
    if body["database"] == "postgresql":
        assert "run plain VACUUM" in body["summary"]
    else:
        assert body["compaction"] == "VACUUM" and "reclaimed" in body["summary"]
    assert (await server.client.get(f"/v1/executions/{execution_id}")).status_code == 404


async def test_the_schedule_prunes_what_finished_on_its_interval(start_app, db_url):
    server = await start_app(db_url, model="test", retention="0s", retention_interval="1s")
    schedule = server.app.state.retention
    await eventually_async(lambda: schedule.runs >= 1, "the first scheduled prune")
    await make_team(server.client)
    first = await run(server.client, "plan-write")
    await finished(server.client, first)

    await eventually_async(lambda: schedule.pruned == 1, "the schedule to prune the finished run", timeout=30)
    assert (await server.client.get(f"/v1/executions/{first}")).status_code == 404
    assert schedule.runs >= 2  # the first found nothing; a later one pruned the run


async def test_a_wrong_retention_stops_the_server_before_it_starts(sqlite_url):
    with pytest.raises(
        InvalidConfigError, match=r"^QMCP_RETENTION='monthly': age 'monthly' is not a duration"
    ):
        create_app(ServerOptions.from_settings(db_url=sqlite_url, retention="monthly"))
