"""The console's pages: executions, one execution (diagram, timeline, step panel, approvals), topologies.

Rendered on the server with Jinja2 from the same database and `RunManager` the API uses; forms post
here and redirect (they work without JavaScript); `console.js` adds live updates from the execution's
Server-Sent Events and the streamed text of the running step. With a token configured, a browser signs
in once at `/login` and carries a session cookie (`ConsoleSessions`; the server's middleware checks it).
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from ...agentframework.errors import QmcpError
from ...agentframework.models import Execution, ExecutionStatus, ExecutionStep, HumanRequestStatus, utcnow
from ...agentframework.runners import collect_teams
from ...agentframework.store import Database
from ...agentframework.topologies import Dag, DagNode, execution_diagram, topology_dag
from ...app import Door, RunRequest, answer_only, summary_lines
from ..api import caller
from ..problems import error_problem
from . import _lineage, _views
from ._markdown import render_markdown
from ._sessions import CONSOLE_COOKIE, ConsoleSessions, LoginLimiter

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
_ACTIVE = ("pending", "running")
_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("qmcp.server.console", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    when=_views.format_when,
    duration=_views.format_duration,
    cost=_views.format_cost,
    pretty=_views.pretty_json,
)
_env.globals.update(
    tokens=_views.format_tokens, quote=lambda text: quote(str(text), safe=""), mark=_lineage.step_mark
)


def _render(request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
    state = request.app.state.qmcp
    html = _env.get_template(template).render(
        request=request, signed_in=state.api_token is not None, version=state.version, **values
    )
    return HTMLResponse(html, status_code=code)


def _db(request: Request) -> Database:
    db: Database | None = request.app.state.qmcp.db
    assert db is not None, "the server's lifespan opens the database"
    return db


def _error(request: Request, error: QmcpError | str, status: int = 400) -> HTMLResponse:
    if isinstance(error, QmcpError):
        status, _ = error_problem(error)
    return _render(request, "error.html", code=status, message=str(error), status_code=status)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (what the console's forms send), last value of each field."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _back(path: str, notice: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'notice': notice})}" if notice else path, status_code=303)


# -- sign-in ----------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _sessions(request: Request) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state.console_sessions
    return sessions


def _signed_in(response: Response, request: Request) -> Response:
    sessions = _sessions(request)
    response.set_cookie(
        CONSOLE_COOKIE,
        sessions.start(),
        max_age=math.ceil(sessions.lifetime),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def _sign_in(request: Request, token: str, expected: str, target: str) -> Response:
    """Compare `token` in constant time, after the limit on failed attempts from the client's address."""
    limiter: LoginLimiter = request.app.state.login_limiter
    address = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(address)
    if wait is not None:
        message = f"too many failed sign-ins from {address}: try again in {wait} s"
        response = _render(request, "error.html", code=429, message=message, status_code=429)
        response.headers["Retry-After"] = str(wait)
        return response
    if not hmac.compare_digest(token.encode(), expected.encode()):
        limiter.failed(address)
        return _render(request, "login.html", code=401, next=target, failed=True)
    return _signed_in(RedirectResponse(target, status_code=303), request)


@router.get("/login")
async def login_page(request: Request, next: str = "/", token: str | None = None) -> Response:
    expected = request.app.state.qmcp.api_token
    if expected is None:
        return RedirectResponse(_safe_next(next), status_code=303)
    if (
        token is not None
    ):  # a link with the token once (e.g. printed by a script): sign in, drop it from the URL
        return _sign_in(request, token, expected, _safe_next(next))
    return _render(request, "login.html", next=_safe_next(next), failed=False)


@router.post("/login")
async def login(request: Request) -> Response:
    expected = request.app.state.qmcp.api_token
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if expected is None:
        return RedirectResponse(target, status_code=303)
    return _sign_in(request, form.get("token", "").strip(), expected, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Ends the browser's session on the server (a copy of its cookie no longer signs anyone in)."""
    _sessions(request).end(request.cookies.get(CONSOLE_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(CONSOLE_COOKIE, path="/")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media = _STATIC.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("qmcp.server.console").joinpath("static", name).read_bytes()
    return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})


# -- executions -------------------------------------------------------------------------------------


async def _list_values(request: Request, status: str, topology: str, page: int) -> dict[str, Any]:
    db = _db(request)
    wanted = ExecutionStatus(status) if status in {s.value for s in ExecutionStatus} else None
    page = max(page, 1)
    name = topology or None
    rows = await db.list_executions(
        status=wanted, topology_name=name, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    total = await db.count_executions(status=wanted, topology_name=name)
    return {
        "executions": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "status": wanted.value if wanted else "",
        "topology": topology,
        "live": any(str(e.status) in (*_ACTIVE, "paused") for e in rows),
    }


@router.get("/")
async def executions_page(
    request: Request, status: str = "", topology: str = "", page: int = 1, fragment: str = ""
) -> HTMLResponse:
    values = await _list_values(request, status, topology, page)
    if fragment == "rows":
        return _render(request, "_execution_rows.html", **values)
    topologies = [t.name for t, _ in await _db(request).list_topologies()]
    return _render(
        request,
        "executions.html",
        statuses=[s.value for s in ExecutionStatus],
        topologies=topologies,
        **values,
    )


async def _execution(request: Request, execution_id: str) -> tuple[Execution, Sequence[ExecutionStep]]:
    db = _db(request)
    execution = await db.get_execution(execution_id)
    return execution, await db.list_steps(execution.id)


def _step_link(execution: Execution) -> Any:
    def link(node: DagNode) -> str | None:
        return f"/executions/{execution.id}?step={quote(node.id, safe='')}" if node.kind == "step" else None

    return link


def _totals(execution: Execution, steps: Sequence[ExecutionStep]) -> tuple[int, int, float]:
    """Tokens in, out and cost so far: while the run goes the execution's own totals are not yet
    written, so its recorded steps are summed (each finished step shows at once, and after a reload)."""
    if str(execution.status) in _ACTIVE:
        return (
            sum(s.input_tokens for s in steps),
            sum(s.output_tokens for s in steps),
            sum(s.cost_usd for s in steps),
        )
    return execution.input_tokens, execution.output_tokens, execution.cost_usd


async def _live_values(
    request: Request, execution: Execution, steps: Sequence[ExecutionStep]
) -> dict[str, Any]:
    hub = request.app.state.qmcp.hub
    running = hub.running(execution.id) if str(execution.status) == "running" else []
    flights = [(r.key, r.slot, r.agent) for r in running]
    try:
        dag, statuses = execution_diagram(execution, steps, flights)
    except QmcpError:  # its topology type is not registered in this process: the steps alone
        dag = Dag().with_steps([(s.key, s.slot, s.agent_name) for s in steps] + flights)
        statuses = {s.key: str(s.status) for s in steps} | {key: "running" for key, _, _ in flights}
    for step in running:
        if step.retries:
            statuses[step.key] = "retry"
    now = utcnow()
    humans = []
    if str(execution.status) == "paused":
        humans = await _db(request).list_human_requests(
            execution_id=execution.id, status=HumanRequestStatus.PENDING, limit=20
        )
    output = execution.output_data or {}
    answer = answer_only(output)
    return {
        "execution": execution,
        "steps": steps,
        "running": running,
        "answer": None if answer is None else render_markdown(answer),
        "explained": summary_lines(output) if output else [],
        "totals": _totals(execution, steps),
        "diagram": Markup(
            dag.svg(
                statuses,
                title=f"{execution.topology_name} ({execution.topology_type}): {execution.status}",
                link=_step_link(execution),
            )
        ),
        "timeline": Markup(
            _views.timeline_svg(
                # a fork's inherited steps ran in its parent, maybe long before: the diagram and the
                # table show them, the timeline what this execution ran
                _views.bars([s for s in steps if not s.inherited], running),
                now,
                step_href=f"/executions/{execution.id}?step=",
            ).replace("<svg ", f'<svg data-now="{now.timestamp() * 1000:.0f}" ', 1)
        ),
        "humans": humans,
        "active": str(execution.status) in _ACTIVE,
        "can_resume": str(execution.status) in ("failed", "cancelled", "interrupted", "paused"),
        "can_cancel": str(execution.status) in (*_ACTIVE, "paused"),
    }


def _panel_values(
    request: Request, execution: Execution, steps: Sequence[ExecutionStep], key: str | None
) -> dict[str, Any]:
    if not key:
        return {"selected": None, "step": None, "flight": None}
    step = next((s for s in steps if s.key == key), None)
    flight = None
    if step is None:
        flight = next((r for r in request.app.state.qmcp.hub.running(execution.id) if r.key == key), None)
    return {"selected": key, "step": step, "flight": flight}


@router.get("/executions/{execution_id}")
async def execution_page(
    request: Request, execution_id: str, step: str = "", notice: str = ""
) -> HTMLResponse:
    try:
        execution, steps = await _execution(request, execution_id)
    except QmcpError as error:
        return _error(request, error)
    return _render(
        request,
        "execution.html",
        notice=notice,
        lineage=await _lineage.family(_db(request), execution),
        **await _live_values(request, execution, steps),
        **_panel_values(request, execution, steps, step),
    )


@router.get("/executions/{execution_id}/live")
async def execution_live(request: Request, execution_id: str) -> HTMLResponse:
    """The parts of the execution page that change while it runs (the script swaps them in)."""
    try:
        execution, steps = await _execution(request, execution_id)
    except QmcpError as error:
        return _error(request, error)
    return _render(request, "_live.html", **await _live_values(request, execution, steps))


@router.get("/executions/{execution_id}/panel")
async def execution_panel(request: Request, execution_id: str, step: str = "") -> HTMLResponse:
    try:
        execution, steps = await _execution(request, execution_id)
    except QmcpError as error:
        return _error(request, error)
    return _render(
        request, "_panel.html", execution=execution, **_panel_values(request, execution, steps, step)
    )


@router.post("/executions/{execution_id}/resume")
async def resume(request: Request, execution_id: str) -> Response:
    try:
        execution = await request.app.state.qmcp.runs.resume(
            execution_id, caller(request, Door.CONSOLE), trace=request.headers
        )
    except QmcpError as error:
        return _back(f"/executions/{execution_id}", str(error))
    return _back(f"/executions/{execution.id}", f"resume queued ({execution.status})")


@router.post("/executions/{execution_id}/cancel")
async def cancel(request: Request, execution_id: str) -> Response:
    try:
        result = await request.app.state.qmcp.runs.cancel(execution_id)
    except QmcpError as error:
        return _back(f"/executions/{execution_id}", str(error))
    return _back(f"/executions/{execution_id}", f"cancel requested ({result.status})")


@router.post("/executions/{execution_id}/respond")
async def respond(request: Request, execution_id: str) -> Response:
    """A person's answer to the paused run's request: a choice (approve / reject) or free text."""
    form = await _form(request)
    answer = form.get("choice") or form.get("text", "").strip()
    here = f"/executions/{execution_id}"
    if not answer:
        return _back(here, "write an answer, or choose one of the options")
    db = _db(request)
    try:
        human, _ = await db.answer_human_request(
            form.get("request_id", ""), answer, responded_by=form.get("responded_by") or "console"
        )
        await request.app.state.qmcp.runs.answered(human)
    except QmcpError as error:
        return _back(here, str(error))
    return _back(here, f"answered: {answer}")


# -- topologies -------------------------------------------------------------------------------------


@router.get("/topologies")
async def topologies_page(request: Request) -> HTMLResponse:
    db = _db(request)
    return _render(request, "topologies.html", topologies=await db.list_topologies())


async def _topology_values(request: Request, name: str) -> dict[str, Any]:
    db = _db(request)
    topology, agents = await db.get_topology(name)
    teams = await collect_teams(db, topology)
    dag = topology_dag(topology, agents, teams)
    recent = await db.list_executions(topology_name=name, limit=5)
    return {
        "topology": topology,
        "agents": agents,
        "diagram": Markup(dag.svg(title=f"{topology.name} ({topology.topology_type})")),
        "recent": recent,
        "runners": ("local", "async", "metaflow"),
    }


@router.get("/topologies/{name}")
async def topology_page(request: Request, name: str) -> HTMLResponse:
    try:
        values = await _topology_values(request, name)
    except QmcpError as error:
        return _error(request, error)
    return _render(
        request,
        "topology.html",
        form={"input": '{\n  "prompt": ""\n}', "runner": "local", "model": ""},
        problem=None,
        **values,
    )


@router.post("/topologies/{name}/run")
async def run_topology(request: Request, name: str) -> Response:
    form = {"input": "", "runner": "local", "model": ""} | await _form(request)
    problem = None
    try:
        data = json.loads(form.get("input") or "{}")
        if not isinstance(data, dict):
            problem = 'the input must be a JSON object, like {"prompt": "..."}'
    except json.JSONDecodeError as error:
        problem = f"the input is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
    if problem is None:
        config = {"model_override": form["model"].strip()} if form.get("model", "").strip() else {}
        try:
            execution = await request.app.state.qmcp.runs.submit(
                RunRequest(name, data, form.get("runner") or "local", config),
                caller(request, Door.CONSOLE),
                trace=request.headers,
            )
        except QmcpError as error:
            problem = str(error)
        else:
            return RedirectResponse(f"/executions/{execution.id}", status_code=303)
    try:
        values = await _topology_values(request, name)
    except QmcpError as error:
        return _error(request, error)
    return _render(request, "topology.html", code=400, form=form, problem=problem, **values)
