"""Schemathesis against every operation of `/openapi.json`: property-based requests generated from the
document, sent in process over ASGI (schemathesis runs the app and its lifespan on its own event loop),
on SQLite and on PostgreSQL, with the server's token (and a few requests per operation without it: 401), a
fixed seed (`derandomize`) and bounded examples.

Every response must not be a 5xx, must have a status the document lists for its operation, the content
type it lists, and a body that its schema accepts. Each operation is fuzzed three ways: with generated
path parameters (mostly unknown names: the 404s), with path parameters naming stored things (a team,
a finished execution, a human request, an invocation, an eval: the 2xx and the conflicts), and with data that
breaks the schema (the 422s) where the operation has a query or a body to break; and through schemathesis'
coverage phase (every boundary of the schema, and the methods a path does not take: 405 with `Allow`).

Not covered here, on purpose: the console's pages and `/mcp` are not in the OpenAPI document (the
console is HTML for browsers, tested by test_console*.py; `/mcp` is JSON-RPC, tested by
test_server_mcp.py). Every operation of the document is fuzzed, none is excluded; the event stream
of a stored execution ends (its run has finished), and schemathesis reads at most a bounded number of
events of any stream.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import schemathesis  # a dev dependency: CI must not skip this test for want of it
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.python import asgi as st_asgi
from serving import BASE_URL
from team import AGENTS, TOPOLOGIES

from qmcp.agentframework.models import AgentConfig, AgentType, Topology
from qmcp.agentframework.store import Database
from qmcp.app import Caller
from qmcp.eval import EvalRequest, start_eval
from qmcp.server import ServerOptions, create_app

TOKEN = "fuzz-token-0123456789abcdef0123456789"
HEADERS = {"Host": BASE_URL.removeprefix("http://"), "Authorization": f"Bearer {TOKEN}"}
ANONYMOUS = {"Host": HEADERS["Host"]}
"""Without the token: every operation but `/health` must answer 401, in its documented shape."""
ANONYMOUS_EXAMPLES = 3
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]
EXAMPLES = int(os.environ.get("QMCP_FUZZ_EXAMPLES", "12"))
"""Per operation and way: 29 operations x 3 ways x 12 take seconds per database; set QMCP_FUZZ_EXAMPLES
to fuzz harder (the seed stays fixed: the same number gives the same requests)."""


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    statuses: Counter[int],
    headers: dict[str, str] = HEADERS,
    examples: int = EXAMPLES,
    **fixed: Any,
) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed).map(_in_process))
    def check(case: Any) -> None:
        statuses[case.call_and_validate(headers=headers, checks=CHECKS).status_code] += 1

    check()


def _cover(schema: Any, operation: Any, statuses: Counter[int]) -> None:
    """Schemathesis' coverage phase: the boundaries of each schema (each enum value, the limits of each
    bound, each required field missing, wrong types, methods the path does not take), no randomness."""
    for case in schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation),
    ):
        response = _in_process(case).call_and_validate(
            headers=HEADERS, checks=[*CHECKS, st_checks.unsupported_method]
        )
        statuses[response.status_code] += 1


def _in_process(case: Any) -> Any:
    """A run asked of the `metaflow` runner runs on `local` instead: Metaflow's runs are processes of their
    own (tests/metaflow covers them), which this in-process test neither starts nor waits for."""
    if isinstance(case.body, dict) and case.body.get("runner") == "metaflow":
        case.body = {**case.body, "runner": "local"}
    return case


def _call(schema: Any, method: str, path: str, **case: Any) -> Any:
    response = schema[path][method].Case(**case).call(headers=HEADERS)
    assert response.status_code < 300, (method, path, response.text)
    return response.json() if response.content else None


def _seed(schema: Any) -> dict[str, str]:
    """What the seeded pass names: a stored team, a finished execution, a human request, an invocation."""
    for agent in AGENTS:
        _call(schema, "POST", "/v1/agents", body=agent, media_type="application/json")
    for topology in TOPOLOGIES:
        _call(schema, "POST", "/v1/topologies", body=topology, media_type="application/json")
    run = _call(
        schema,
        "POST",
        "/v1/topologies/{name}/run",
        path_parameters={"name": "plan-write"},
        body={"input": {"prompt": "fuzz"}},
        media_type="application/json",
    )
    for _ in range(600):
        execution = _call(
            schema,
            "GET",
            "/v1/executions/{execution_id}",
            path_parameters={"execution_id": run["execution_id"]},
        )
        if execution["status"] not in ("pending", "running"):
            break
    assert execution["status"] == "completed", execution
    human = {"id": "fuzz-question", "request_type": "approval", "prompt": "ok?", "options": ["yes", "no"]}
    _call(schema, "POST", "/v1/human/requests", body=human, media_type="application/json")
    echo = {"input": {"message": "fuzz"}}
    invocation = _call(
        schema,
        "POST",
        "/v1/tools/{tool_name}",
        path_parameters={"tool_name": "echo"},
        body=echo,
        media_type="application/json",
    )
    return {
        "name": "plan-write",
        "tool_name": "echo",
        "execution_id": run["execution_id"],
        "request_id": "fuzz-question",
        "invocation_id": invocation["invocation_id"],
    }


def _seed_eval(db_url: str) -> str:
    """An eval (`qmcp eval` from Python: evals are not started over HTTP) of two samples on the `test`
    model, for the operations that name one; its id."""

    async def run() -> str:
        async with Database(db_url) as db:
            solver = AgentType(
                name="fuzz-solver", role="writer", config=AgentConfig(model="test").model_dump()
            )
            await db.save_team(
                Topology(name="fuzz-eval", topology_type="pipeline", config={}), {"solve": solver}
            )
            records = [{"id": f"s{n}", "input": f"{n} + 1", "target": str(n + 1)} for n in range(2)]
            request = EvalRequest(records=records, topologies=["fuzz-eval"], single_call=["fuzz-solver"])
            return (await start_eval(db, request, Caller.operator())).eval_id

    return asyncio.run(run())


def _seeded(operation: Any, names: dict[str, str]) -> dict[str, str]:
    wanted = {p.name for p in operation.path_parameters}
    if operation.path.startswith("/v1/agents/"):
        return {"name": "writer-a"}
    return {key: value for key, value in names.items() if key in wanted}


def _deletes_last(operation: Any) -> bool:
    """Deletes go last, so that the seeded pass of the other operations finds the team still stored."""
    return operation.method.upper() == "DELETE"


def test_every_operation_keeps_its_schema_under_fuzzing(db_url: str) -> None:
    """No 5xx, and every response is one the document promises (status, content type and body)."""
    eval_id = _seed_eval(db_url)
    app = create_app(ServerOptions.from_settings(db_url=db_url, api_token=TOKEN, shutdown_grace_seconds=0.2))
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app  # as `schemathesis.openapi.from_asgi` does, without its request (Host: testserver)
    try:
        names = {**_seed(schema), "eval_id": eval_id}
        fuzzed: dict[str, Counter[int]] = {}
        failures: list[str] = []
        operations = sorted((result.ok() for result in schema.get_all_operations()), key=_deletes_last)
        anonymous: dict[str, Counter[int]] = {}
        for operation in operations:
            statuses = anonymous[operation.label] = Counter()
            try:
                _fuzz(operation, GenerationMode.POSITIVE, statuses, ANONYMOUS, ANONYMOUS_EXAMPLES)
            except Exception as failure:
                failures.append(f"{operation.label} (without the token): {failure}")
        for operation in operations:
            statuses = fuzzed[operation.label] = Counter()
            ways: list[tuple[GenerationMode, dict[str, Any]]] = [(GenerationMode.POSITIVE, {})]
            if operation.path_parameters:
                ways.append((GenerationMode.POSITIVE, {"path_parameters": _seeded(operation, names)}))
            if operation.query or operation.body:
                ways.append((GenerationMode.NEGATIVE, {}))
            try:
                _cover(schema, operation, statuses)
            except Exception as failure:
                failures.append(f"{operation.label} (coverage): {failure}")
            for mode, fixed in ways:
                try:
                    _fuzz(operation, mode, statuses, **fixed)
                except Unsatisfiable:
                    pass  # nothing of this operation can break its schema this way
                except Exception as failure:
                    failures.append(f"{operation.label} ({mode.value}, {fixed}): {failure}")
        assert not failures, "\n\n".join(failures)
    finally:
        st_asgi.shutdown_lifespans()  # the app's lifespan ends before its database is dropped
    assert len(fuzzed) == sum(len(methods) for methods in app.openapi()["paths"].values())
    reached = {status for statuses in fuzzed.values() for status in statuses}
    assert {200, 201, 202, 204, 404, 409, 422} <= reached, fuzzed
    assert all(
        set(statuses) == ({200} if label == "GET /health" else {401}) for label, statuses in anonymous.items()
    ), anonymous
