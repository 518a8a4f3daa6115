"""Upstream's tool server: the tools, calling one, and the history of invocations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...agentframework.errors import NotFoundError
from ...app import row_json, shown_json
from ..problems import problems
from ..tools import invoke_tool, server_tools
from ._deps import Db, FiniteJsonRoute, Limit, Offset, State, correlation
from ._schemas import (
    InvocationListOut,
    InvocationOut,
    ToolDefinitionOut,
    ToolInvokeIn,
    ToolInvokeOut,
    ToolListOut,
)

router = APIRouter(tags=["tools"], route_class=FiniteJsonRoute)


@router.get("/v1/tools", response_model=ToolListOut)
async def list_tools() -> dict[str, list[ToolDefinitionOut]]:
    return {
        "tools": [
            ToolDefinitionOut(name=t.name, description=t.description, input_schema=t.input_schema)
            for t in server_tools().values()
        ]
    }


@router.post(
    "/v1/tools/{tool_name}",
    responses=problems(
        400,
        404,
        503,
        described={
            413: "The request body is too large, or the plan has more steps than QMCP_TOOL_MAX_PLAN_STEPS",
            422: "The body does not match the schema, or the call would spend more than QMCP_TOOL_MAX_TOKENS "
            "or QMCP_TOOL_MAX_COST_USD",
            429: "The server's tools reached their per-minute cap (Retry-After says when to retry)",
        },
    ),
)
async def call_tool(
    tool_name: str, body: ToolInvokeIn, request: Request, db: Db, state: State
) -> ToolInvokeOut:
    tool = server_tools().get(tool_name)
    if tool is None:
        raise NotFoundError(f"tool {tool_name!r} not found; list them at GET /v1/tools")
    invocation = await invoke_tool(
        db,
        tool,
        body.input,
        correlation(request, body.correlation_id),
        limits=request.app.state.tool_limits,
        model_override=state.runs.policy.pinned_model,
    )
    return ToolInvokeOut(
        result=shown_json(invocation.result), error=invocation.error, invocation_id=invocation.id
    )


@router.get("/v1/invocations", response_model=InvocationListOut, responses=problems(422, 503))
async def list_invocations(
    db: Db,
    tool_name: str | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|success|failed)$")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    rows = await db.list_tool_invocations(tool_name=tool_name, status=status, limit=limit, offset=offset)
    return {"invocations": [row_json(row) for row in rows], "count": len(rows)}


@router.get("/v1/invocations/{invocation_id}", response_model=InvocationOut, responses=problems(404, 503))
async def get_invocation(invocation_id: str, db: Db) -> dict[str, Any]:
    return row_json(await db.get_tool_invocation(invocation_id))
