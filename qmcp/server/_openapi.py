"""The OpenAPI document at `/openapi.json`, made to tell the truth about errors.

FastAPI documents a 422 as its own `{detail: [...]}` and nothing else, while this server answers every
error with a problem document (`problems.py`). Here every 4xx and 5xx of every operation is a `Problem`
as `application/problem+json`, and the statuses that no route raises but every request can meet are
added where they apply: the middleware's (`_middleware.py`: 421 for a foreign Host, 401 without the
token, 403 for a cross-site write, 413 for a large body) and 500 for a bug. A generated client then
parses every answer the server can give (tests/server/test_openapi_client.py; schemathesis checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from ._middleware import OPEN_PATHS, UNSAFE_METHODS
from .problems import MEDIA_TYPE, Problem, problems

__all__ = ["install_openapi"]

_SHARED = {
    421: "The request's Host is not a name this server answers to (DNS rebinding): see --allowed-host",
    500: "A bug in the server: the problem names only the error's type (the log has the rest)",
}
_TOKEN = "The server has a token (QMCP_API_TOKEN) and the request did not send it as Authorization: Bearer"
_CROSS_SITE = "A write from a web page of another site (its Origin is not this server)"
_BODY = "The request body is larger than the server's limit (QMCP_MAX_BODY_BYTES)"
_FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI, routes: Sequence[BaseRoute] | None = None) -> None:
    """Serve `app`'s OpenAPI document with problems for errors (built once, on first request).
    `routes`: the operations in the document's order (default: the app's routes, in matching order)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=list(routes) if routes is not None else app.routes,
            )
            app.openapi_schema = _with_problems(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the document


def _with_problems(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "QMCP_API_TOKEN, if the server has one"}
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            shared = dict(_SHARED)
            if path not in OPEN_PATHS:
                shared[401] = _TOKEN
                operation["security"] = [{"bearer": []}, {}]  # the token only if the server has one
            if method.upper() in UNSAFE_METHODS:
                shared[403] = _CROSS_SITE
            if "requestBody" in operation:
                shared[413] = _BODY
            responses = operation.setdefault("responses", {})
            for status, response in problems(*shared, described=shared).items():
                known = responses.setdefault(str(status), response)
                if known is not response and shared[int(status)] not in known["description"]:
                    known["description"] += f"; or: {shared[int(status)]}"
            for status, response in responses.items():
                if int(status) >= 400:
                    if status == "422" and response.get("description") == "Validation Error":
                        response["description"] = problems(422)[422]["description"]
                    response["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            operation["responses"] = dict(sorted(responses.items()))
    for name in _FASTAPI_ERRORS:
        schemas.pop(name, None)
    components["schemas"] = dict(sorted(schemas.items()))
    return document
