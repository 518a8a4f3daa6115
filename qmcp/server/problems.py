"""Errors as RFC 9457 problem details (`application/problem+json`), mapped from qmcp's own errors.

The body keeps upstream's `detail` field, so clients that read `response.json()["detail"]` work.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from ..agentframework.errors import (
    BudgetExceededError,
    ConflictError,
    DatabaseUnavailableError,
    ExecutionBusyError,
    ExpiredError,
    NotFoundError,
    PermissionDeniedError,
    PlanTooLargeError,
    QmcpError,
    RateLimitedError,
    StorageError,
    UntrustedDefinitionError,
    UserInputError,
)
from ..observability import get_logger
from ..redaction import redact

__all__ = [
    "MEDIA_TYPE",
    "Problem",
    "ValidationIssue",
    "error_problem",
    "install_problem_handlers",
    "problem",
    "problem_body",
    "problems",
]

MEDIA_TYPE = "application/problem+json"


class ValidationIssue(BaseModel):
    """One reason a request was refused as invalid (a 422 `validation` problem lists them all)."""

    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field's path")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document: every error the server answers with (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="`urn:qmcp:problem:{kind}` (not-found, conflict, validation, ...), or `about:blank`"
    )
    title: str = Field(description="The HTTP status's phrase")
    status: int
    detail: str = Field(description="One line: what is wrong and how to fix it (upstream's `detail`)")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="Every reason, on a 422 `validation` problem only"
    )


_WHY: dict[int, str] = {
    400: "The request is wrong (an invalid definition or value); `detail` says what to change",
    403: "The caller may not decide this (the operator's setting, or an untrusted definition)",
    404: "Nothing of that name or id exists",
    409: "It conflicts with what is stored (taken, already answered, or run by another process)",
    410: "The human request expired before it was answered",
    413: "The request body is too large",
    422: "The request does not match this operation's schema (`errors` lists every reason)",
    429: "A server-wide cap is reached; `Retry-After` says when to try again",
    503: "The database cannot be reached or failed under the request",
}


def problems(*statuses: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status answered with a `Problem` (as `application/problem+json`),
    described by `described`'s sentence or the status's usual one. The OpenAPI document's generator
    (`_openapi.py`) adds the statuses every route shares (401, 421, 500, ...)."""
    described = described or {}
    return {
        status: {
            "description": described.get(status) or _WHY[status],
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted({*statuses, *described})
    }


_BY_ERROR: list[tuple[type[BaseException], int, str]] = [
    (NotFoundError, 404, "not-found"),
    (ConflictError, 409, "conflict"),
    (ExecutionBusyError, 409, "execution-busy"),
    (ExpiredError, 410, "expired"),
    (UntrustedDefinitionError, 403, "untrusted-definition"),
    (PermissionDeniedError, 403, "forbidden-by-policy"),
    (RateLimitedError, 429, "rate-limited"),
    (PlanTooLargeError, 413, "plan-too-large"),
    (BudgetExceededError, 422, "budget-exceeded"),
    (DatabaseUnavailableError, 503, "database-unavailable"),
    (StorageError, 503, "storage-failed"),
    (UserInputError, 400, "invalid-input"),
]


def error_problem(error: QmcpError) -> tuple[int, str]:
    """The HTTP status and problem kind of one of qmcp's errors: the API's problems and the console's
    error pages answer the same error with the same status."""
    for kind, status, slug in _BY_ERROR:
        if isinstance(error, kind):
            return status, slug
    return 500, "run-error"


def problem_body(status: int, detail: str, *, kind: str | None = None, **extra: Any) -> dict[str, Any]:
    """The problem document: `type` names the kind of problem (`about:blank` for a plain HTTP status)."""
    return {
        "type": f"urn:qmcp:problem:{kind}" if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": redact(detail),
        **extra,
    }


def problem(status: int, detail: str, *, kind: str | None = None, **extra: Any) -> Response:
    return Response(
        json.dumps(problem_body(status, detail, kind=kind, **extra), default=str),
        status_code=status,
        media_type=MEDIA_TYPE,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the API can answer with becomes a problem document; nothing answers with a traceback."""

    @app.exception_handler(QmcpError)
    async def qmcp_error(_request: Request, error: QmcpError) -> Response:
        status, kind = error_problem(error)
        answer = problem(status, str(error), kind=kind)
        if isinstance(error, RateLimitedError):
            answer.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> Response:
        errors = [
            {"loc": list(item.get("loc", ())), "msg": _message(item), "type": item.get("type", "")}
            for item in error.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return problem(
            422, f"{where}: {first['msg']}" if where else str(first["msg"]), kind="validation", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        answer = problem(error.status_code, str(error.detail))
        answer.headers.update(error.headers or {})
        # HTTP requires a 405's `Allow`; Starlette's names the methods of the path's first route only
        if error.status_code == 405:
            answer.headers["Allow"] = ", ".join(_allowed_methods(request))
        return answer

    @app.exception_handler(RecursionError)
    async def too_deep(_request: Request, _error: RecursionError) -> Response:
        return problem(400, "the request body is nested too deeply", kind="invalid-input")

    @app.exception_handler(Exception)
    async def internal(_request: Request, error: Exception) -> Response:
        get_logger().error("http.internal_error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return problem(500, f"internal error: {type(error).__name__}", kind="internal")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at the request's path (each route of a path has its own)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def _message(item: Any) -> str:
    """A validation error's message; a body that is not JSON says why (the parser's reason)."""
    message = str(item.get("msg", ""))
    reason = (item.get("ctx") or {}).get("error")
    return f"{message}: {reason}" if item.get("type") == "json_invalid" and reason else message
