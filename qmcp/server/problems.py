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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

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

__all__ = ["MEDIA_TYPE", "error_problem", "install_problem_handlers", "problem", "problem_body"]

MEDIA_TYPE = "application/problem+json"

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
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return problem(error.status_code, str(error.detail))

    @app.exception_handler(RecursionError)
    async def too_deep(_request: Request, _error: RecursionError) -> Response:
        return problem(400, "the request body is nested too deeply", kind="invalid-input")

    @app.exception_handler(Exception)
    async def internal(_request: Request, error: Exception) -> Response:
        get_logger().error("http.internal_error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return problem(500, f"internal error: {type(error).__name__}", kind="internal")


def _message(item: Any) -> str:
    """A validation error's message; a body that is not JSON says why (the parser's reason)."""
    message = str(item.get("msg", ""))
    reason = (item.get("ctx") or {}).get("error")
    return f"{message}: {reason}" if item.get("type") == "json_invalid" and reason else message
