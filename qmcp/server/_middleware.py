"""What every request goes through: the Host allowlist, request and correlation ids, the bearer token,
the body limit, metrics, and the console's framing headers.

A request whose `Host` is not one this server answers to (`HostAllowlist`: DNS rebinding) gets 421,
on every route. Browsers (the console) cannot send a bearer header on page loads and Server-Sent
Events: they sign in once at `/login`, which sets an HttpOnly, SameSite=Strict cookie holding a random
session id (`ConsoleSessions`, not the token). A console page asked for without either goes to `/login`; an API path answers 401. A
request that changes something (POST, PUT, PATCH, DELETE) from a browser page of another site (its
`Origin` is not this server) is refused, token or not: a loopback server without a token would
otherwise take form posts from any web page. Console pages may not be framed by any page
(`X-Frame-Options: DENY`, CSP `frame-ancestors 'none'`): no clickjacking of its buttons.

A plain ASGI middleware (not Starlette's `BaseHTTPMiddleware`, which buffers responses and would hold
back the Server-Sent Events of `/v1/executions/{id}/events`).
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote, urlsplit

from ._hosts import HostAllowlist
from .console import CONSOLE_COOKIE, ConsoleSessions
from .metrics import HTTP
from .problems import MEDIA_TYPE, problem_body

__all__ = ["CORRELATION_HEADER", "OPEN_PATHS", "REQUEST_HEADER", "UNSAFE_METHODS", "ServerMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_HEADER = "x-request-id"
CORRELATION_HEADER = "x-correlation-id"
OPEN_PATHS = ("/health", "/login", "/static/console.css", "/static/console.js")
_API_PREFIXES = ("/v1/", "/mcp", "/metrics", "/docs", "/openapi.json", "/redoc")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_NO_FRAMING = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]
_REQUEST_NAME, _CORRELATION_NAME = REQUEST_HEADER.encode(), CORRELATION_HEADER.encode()
_READ = frozenset({"host", "origin", "authorization", "cookie", "content-length", CORRELATION_HEADER})
"""The request headers the middleware reads."""


class _TooLarge(BaseException):
    """Raised while the app reads a body past the limit; a BaseException, so that the framework's
    body parsing (which turns any Exception into a 400) lets it through to this middleware."""


class ServerMiddleware:
    """`hosts`: the Host names answered (others: 421). `token`: required as `Authorization: Bearer`
    (or a live console session of `sessions`) on every path but /health and the sign-in page (compared
    in constant time). `max_body`: larger request bodies are refused with 413, before or while they are read."""

    def __init__(
        self,
        app: App,
        *,
        hosts: HostAllowlist,
        token: str | None,
        sessions: ConsoleSessions,
        max_body: int,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token.encode() if token else None
        self.sessions = sessions
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _read_headers(scope["headers"])
        # A request without a correlation id gets one (upstream's server does), echoed and used for
        # what the request starts (a run, a tool invocation, a human request). Ids are as random as
        # uuid4().hex, without building a UUID; one read of the system's randomness makes both.
        fresh = os.urandom(32).hex()
        correlation_id = headers.get(CORRELATION_HEADER) or fresh[32:]
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        added = [
            (_REQUEST_NAME, fresh[:32].encode()),
            (_CORRELATION_NAME, correlation_id.encode("latin-1")),
        ]
        if _console_page(scope["path"]):
            added += _NO_FRAMING
        status = [500]

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        try:
            refusal = self._refusal(scope["path"], headers, scope["method"])
            if refusal is not None:
                if refusal[0] == 401 and scope["method"] in ("GET", "HEAD") and _console_page(scope["path"]):
                    target = scope["path"] + (
                        f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""
                    )
                    await _redirect(send_with_ids, f"/login?next={quote(target, safe='')}")
                    return
                await _problem(send_with_ids, *refusal)
                return
            await self.app(scope, self._limited(receive), send_with_ids)
        except _TooLarge:
            await _problem(send_with_ids, 413, f"the request body is larger than {self.max_body} bytes")
        finally:
            route = scope.get("route")
            path = getattr(route, "path_format", None) or getattr(route, "path", None) or _unrouted(scope)
            HTTP.observe(scope["method"], path, status[0], time.perf_counter() - started)

    def _refusal(self, path: str, headers: dict[str, str], method: str) -> tuple[int, str] | None:
        host = headers.get("host")
        if not self.hosts.allows(host):
            return 421, (
                f"this server does not answer to the Host {(host or '')[:100]!r}: if clients reach it by "
                "that name, start it with qmcp serve --allowed-host NAME (or QMCP_ALLOWED_HOSTS)"
            )
        origin = headers.get("origin")
        cross_site = bool(origin) and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
        if method in UNSAFE_METHODS and cross_site and not path.startswith("/mcp"):
            return 403, f"refused a {method} from a page of another site ({origin})"
        if self.token is not None and path not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            bearer = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)
            if not bearer and not self._cookie_ok(headers.get("cookie")):
                return 401, "this server needs Authorization: Bearer <QMCP_API_TOKEN>"
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, f"the request body is larger than {self.max_body} bytes"
        return None

    def _cookie_ok(self, header: str | None) -> bool:
        if not header:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:  # a malformed Cookie header is no sign-in
            return False
        morsel = jar.get(CONSOLE_COOKIE)
        return morsel is not None and self.sessions.valid(morsel.value)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        return counted


def _read_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers of `_READ` in `raw` (the ASGI scope's), by lowercase name; a repeated one: its last."""
    headers = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in _READ:
            headers[key] = value.decode("latin-1")
    return headers


def _console_page(path: str) -> bool:
    return not path.startswith(_API_PREFIXES)


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _unrouted(scope: Scope) -> str:
    """The metrics label of a request no route matched: not its path, which would be unbounded."""
    return "/mcp" if scope["path"].startswith("/mcp") else "unmatched"


async def _problem(send: Send, status: int, detail: str) -> None:
    body = json.dumps(problem_body(status, detail)).encode()
    headers = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
