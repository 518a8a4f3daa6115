"""`qmcp.client`: the QMCP server from Python, over HTTP (httpx), synchronous or asynchronous.

    from qmcp.client import QmcpClient

    with QmcpClient("http://127.0.0.1:3333", token="...") as client:   # defaults: QMCP_SERVER_URL, QMCP_API_TOKEN
        client.invoke_tool("echo", {"message": "hi"})
        run = client.run_topology("review", {"prompt": "Plan a launch"})
        for event in client.stream_events(run.execution_id):
            print(event["event"], event.get("key"), event.get("status"))

`AsyncQmcpClient` has the same methods, as coroutines (`stream_events` an async iterator). The
tool and human-request methods keep the names, arguments and results of the upstream qmcp client
(`MCPClient` is an alias of `QmcpClient`). Every request is described once (`_Calls`); the two
clients only send it. Executions and steps come back in the shapes every door shares
(`qmcp.app.ExecutionOut`, `StepOut`, `RunAccepted`). This module imports httpx, pydantic and those
shapes only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from .app import ExecutionDiff, ExecutionOut, RunAccepted, StepOut

__all__ = [
    "AsyncQmcpClient",
    "HumanRequest",
    "HumanRequestConflictError",
    "HumanRequestExpiredError",
    "HumanResponse",
    "MCPClient",
    "MCPClientError",
    "QmcpClient",
    "QmcpClientError",
    "ToolDefinition",
    "ToolNotFoundError",
    "ToolResult",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class QmcpClientError(Exception):
    """The server refused or failed a request; `status` and `problem` (its RFC 9457 body) say why."""

    def __init__(
        self, message: str, *, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


MCPClientError = QmcpClientError


class ToolNotFoundError(QmcpClientError):
    pass


class HumanRequestConflictError(QmcpClientError):
    pass


class HumanRequestExpiredError(QmcpClientError):
    pass


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    input_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolResult:
    result: Any
    error: str | None
    invocation_id: str | None


@dataclass(frozen=True)
class HumanRequest:
    id: str
    request_type: str
    prompt: str
    status: str
    created_at: str
    expires_at: str | None = None
    options: list[str] | None = None
    context: dict[str, Any] | None = None


@dataclass(frozen=True)
class HumanResponse:
    id: str
    request_id: str
    response: str
    responded_by: str | None
    created_at: str


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    errors: dict[int, type[QmcpClientError]] = field(default_factory=dict)


def _json(response: httpx.Response) -> Any:
    return response.json()


def _read(shape: type[M]) -> Callable[[httpx.Response], M]:
    """Read an answer as one of the wire shapes every door shares (`qmcp.app`)."""
    return lambda response: shape.model_validate(response.json())


def _path(value: str) -> str:
    return quote(str(value), safe="")


class _Calls:
    """Every request of the API, built once for both clients."""

    def health(self) -> _Call[dict[str, str]]:
        return _Call("GET", "/health", _json)

    def list_tools(self) -> _Call[list[ToolDefinition]]:
        return _Call(
            "GET",
            "/v1/tools",
            lambda r: [
                ToolDefinition(t["name"], t["description"], t.get("input_schema")) for t in r.json()["tools"]
            ],
        )

    def invoke_tool(
        self, tool_name: str, input_params: dict[str, Any], correlation_id: str | None = None
    ) -> _Call[ToolResult]:
        payload: dict[str, Any] = {"input": input_params}
        if correlation_id:
            payload["correlation_id"] = correlation_id
        return _Call(
            "POST",
            f"/v1/tools/{_path(tool_name)}",
            lambda r: ToolResult(
                r.json().get("result"), r.json().get("error"), r.json().get("invocation_id")
            ),
            json=payload,
            errors={404: ToolNotFoundError},
        )

    def list_invocations(
        self, tool_name: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> _Call[list[dict[str, Any]]]:
        params = {"limit": limit, "offset": offset, "tool_name": tool_name, "status": status}
        return _Call("GET", "/v1/invocations", lambda r: r.json()["invocations"], params=params)

    def get_invocation(self, invocation_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/v1/invocations/{_path(invocation_id)}", _json)

    def create_human_request(
        self,
        request_id: str,
        request_type: str,
        prompt: str,
        options: list[str] | None = None,
        context: dict[str, Any] | None = None,
        timeout_seconds: int = 3600,
        correlation_id: str | None = None,
        run_token: str | None = None,
    ) -> _Call[HumanRequest]:
        payload: dict[str, Any] = {
            "id": request_id,
            "request_type": request_type,
            "prompt": prompt,
            "timeout_seconds": timeout_seconds,
            "context": context or {},
        }
        if options:
            payload["options"] = options
        if correlation_id:
            payload["correlation_id"] = correlation_id
        if run_token:
            payload["run_token"] = run_token
        return _Call(
            "POST",
            "/v1/human/requests",
            lambda r: _request(r.json()),
            json=payload,
            errors={409: HumanRequestConflictError},
        )

    def get_human_request(self, request_id: str) -> _Call[tuple[HumanRequest, HumanResponse | None]]:
        def read(response: httpx.Response) -> tuple[HumanRequest, HumanResponse | None]:
            data = response.json()
            answer = data.get("response")
            return _request(data["request"]), (_response(answer) if answer else None)

        return _Call("GET", f"/v1/human/requests/{_path(request_id)}", read)

    def submit_human_response(
        self,
        request_id: str,
        response: str,
        responded_by: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> _Call[HumanResponse]:
        payload: dict[str, Any] = {"request_id": request_id, "response": response}
        if responded_by:
            payload["responded_by"] = responded_by
        if metadata:
            payload["response_metadata"] = metadata
        return _Call(
            "POST",
            "/v1/human/responses",
            lambda r: _response(r.json()),
            json=payload,
            errors={409: HumanRequestConflictError, 410: HumanRequestExpiredError},
        )

    def run_topology(
        self,
        name: str,
        input_data: dict[str, Any],
        runner: str = "local",
        config: dict[str, Any] | None = None,
    ) -> _Call[RunAccepted]:
        payload = {"input": input_data, "runner": runner, "config": config or {}}
        return _Call("POST", f"/v1/topologies/{_path(name)}/run", _read(RunAccepted), json=payload)

    def get_execution(self, execution_id: str) -> _Call[ExecutionOut]:
        return _Call("GET", f"/v1/executions/{_path(execution_id)}", _read(ExecutionOut))

    def list_executions(
        self, status: str | None = None, topology: str | None = None, limit: int = 50, offset: int = 0
    ) -> _Call[list[ExecutionOut]]:
        params = {"status": status, "topology": topology, "limit": limit, "offset": offset}
        return _Call(
            "GET",
            "/v1/executions",
            lambda r: [ExecutionOut.model_validate(e) for e in r.json()["executions"]],
            params=params,
        )

    def list_steps(self, execution_id: str) -> _Call[list[StepOut]]:
        return _Call(
            "GET",
            f"/v1/executions/{_path(execution_id)}/steps",
            lambda r: [StepOut.model_validate(step) for step in r.json()["steps"]],
        )

    def cancel_execution(self, execution_id: str) -> _Call[ExecutionOut]:
        return _Call("POST", f"/v1/executions/{_path(execution_id)}/cancel", _read(ExecutionOut))

    def resume_execution(self, execution_id: str) -> _Call[RunAccepted]:
        return _Call("POST", f"/v1/executions/{_path(execution_id)}/resume", _read(RunAccepted))

    def fork_execution(self, execution_id: str, at: str, **changes: Any) -> _Call[RunAccepted]:
        payload = {"at": at, **{k: v for k, v in changes.items() if v is not None}}
        return _Call("POST", f"/v1/executions/{_path(execution_id)}/fork", _read(RunAccepted), json=payload)

    def diff_executions(self, a: str, b: str) -> _Call[ExecutionDiff]:
        return _Call("GET", f"/v1/executions/{_path(a)}/diff/{_path(b)}", _read(ExecutionDiff))


def _request(data: dict[str, Any]) -> HumanRequest:
    return HumanRequest(
        id=data["id"],
        request_type=data["request_type"],
        prompt=data["prompt"],
        status=data["status"],
        created_at=data["created_at"],
        expires_at=data.get("expires_at"),
        options=data.get("options"),
        context=data.get("context"),
    )


def _response(data: dict[str, Any]) -> HumanResponse:
    return HumanResponse(
        id=data["id"],
        request_id=data["request_id"],
        response=data["response"],
        responded_by=data.get("responded_by"),
        created_at=data["created_at"],
    )


def _raise_for(call: _Call[Any], response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = problem.get("detail") if isinstance(problem, dict) else None
    kind = call.errors.get(response.status_code, QmcpClientError)
    raise kind(
        f"{call.method} {call.path}: {response.status_code} {detail or response.reason_phrase}",
        status=response.status_code,
        problem=problem if isinstance(problem, dict) else {},
    )


class _SseParser:
    """Server-Sent Events lines → events (the `data` JSON of each, which names its `event`)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            event: dict[str, Any] = json.loads(data)
            return event
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip(" "))
        return None  # comments (keep-alives), ids and event names: the data holds what matters


def _defaults(base_url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    base = base_url or os.environ.get("QMCP_SERVER_URL") or "http://127.0.0.1:3333"
    token = token if token is not None else os.environ.get("QMCP_API_TOKEN")
    return base.rstrip("/"), ({"Authorization": f"Bearer {token}"} if token else {})


def _params(call: _Call[Any]) -> dict[str, Any]:
    return {k: v for k, v in call.params.items() if v is not None}


class QmcpClient:
    """The QMCP server, synchronously. `base_url` [QMCP_SERVER_URL, else http://127.0.0.1:3333],
    `token` [QMCP_API_TOKEN], `correlation_id` sent as X-Correlation-ID on every request."""

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        correlation_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, headers = _defaults(base_url, token)
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        self._calls = _Calls()
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> QmcpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: _Call[T]) -> T:
        response = self._http.request(call.method, call.path, json=call.json, params=_params(call))
        _raise_for(call, response)
        return call.read(response)

    def health(self) -> dict[str, str]:
        return self._do(self._calls.health())

    def list_tools(self) -> list[ToolDefinition]:
        return self._do(self._calls.list_tools())

    def invoke_tool(
        self, tool_name: str, input_params: dict[str, Any], correlation_id: str | None = None
    ) -> ToolResult:
        return self._do(self._calls.invoke_tool(tool_name, input_params, correlation_id))

    def list_invocations(
        self, tool_name: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        return self._do(self._calls.list_invocations(tool_name, status, limit, offset))

    def get_invocation(self, invocation_id: str) -> dict[str, Any]:
        return self._do(self._calls.get_invocation(invocation_id))

    def create_human_request(
        self, request_id: str, request_type: str, prompt: str, **kwargs: Any
    ) -> HumanRequest:
        return self._do(self._calls.create_human_request(request_id, request_type, prompt, **kwargs))

    def get_human_request(self, request_id: str) -> tuple[HumanRequest, HumanResponse | None]:
        return self._do(self._calls.get_human_request(request_id))

    def submit_human_response(self, request_id: str, response: str, **kwargs: Any) -> HumanResponse:
        return self._do(self._calls.submit_human_response(request_id, response, **kwargs))

    def wait_for_human_response(
        self, request_id: str, poll_interval: float = 5.0, timeout: float | None = None
    ) -> HumanResponse:
        """Poll until the request is answered; `HumanRequestExpiredError`, or `TimeoutError` after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            request, answer = self.get_human_request(request_id)
            if answer is not None:
                return answer
            _check_waiting(request, request_id, deadline)
            time.sleep(poll_interval)

    def run_topology(
        self,
        name: str,
        input_data: dict[str, Any],
        runner: str = "local",
        config: dict[str, Any] | None = None,
    ) -> RunAccepted:
        """Start a run of a stored topology; it runs on the server (202): poll or stream its execution."""
        return self._do(self._calls.run_topology(name, input_data, runner, config))

    def get_execution(self, execution_id: str) -> ExecutionOut:
        return self._do(self._calls.get_execution(execution_id))

    def list_executions(self, **filters: Any) -> list[ExecutionOut]:
        return self._do(self._calls.list_executions(**filters))

    def list_steps(self, execution_id: str) -> list[StepOut]:
        return self._do(self._calls.list_steps(execution_id))

    def cancel_execution(self, execution_id: str) -> ExecutionOut:
        return self._do(self._calls.cancel_execution(execution_id))

    def resume_execution(self, execution_id: str) -> RunAccepted:
        return self._do(self._calls.resume_execution(execution_id))

    def fork_execution(
        self,
        execution_id: str,
        at: str,
        *,
        model: str | None = None,
        agents: dict[str, str] | None = None,
        input_data: dict[str, Any] | None = None,
        set_output: dict[str, str] | None = None,
    ) -> RunAccepted:
        """Fork an execution at step `at` on the server (202): the steps started before it are reused,
        the rest runs again there. See `qmcp.app.ForkRequest` for the changes."""
        return self._do(
            self._calls.fork_execution(
                execution_id, at, model=model, agents=agents, input=input_data, set_output=set_output
            )
        )

    def diff_executions(self, a: str, b: str) -> ExecutionDiff:
        """Two executions compared step by step."""
        return self._do(self._calls.diff_executions(a, b))

    def stream_events(self, execution_id: str) -> Iterator[dict[str, Any]]:
        """The execution's events (replayed, then live) until its run stops; the last is `end`."""
        parser = _SseParser()
        call = _Call("GET", f"/v1/executions/{_path(execution_id)}/events", _json)
        with self._http.stream("GET", call.path, timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(call, response)
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event


MCPClient = QmcpClient


class AsyncQmcpClient:
    """The QMCP server, asynchronously: `QmcpClient`'s methods as coroutines."""

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        correlation_id: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, headers = _defaults(base_url, token)
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        self._calls = _Calls()
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    async def __aenter__(self) -> AsyncQmcpClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: _Call[T]) -> T:
        response = await self._http.request(call.method, call.path, json=call.json, params=_params(call))
        _raise_for(call, response)
        return call.read(response)

    async def health(self) -> dict[str, str]:
        return await self._do(self._calls.health())

    async def list_tools(self) -> list[ToolDefinition]:
        return await self._do(self._calls.list_tools())

    async def invoke_tool(
        self, tool_name: str, input_params: dict[str, Any], correlation_id: str | None = None
    ) -> ToolResult:
        return await self._do(self._calls.invoke_tool(tool_name, input_params, correlation_id))

    async def list_invocations(
        self, tool_name: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        return await self._do(self._calls.list_invocations(tool_name, status, limit, offset))

    async def get_invocation(self, invocation_id: str) -> dict[str, Any]:
        return await self._do(self._calls.get_invocation(invocation_id))

    async def create_human_request(
        self, request_id: str, request_type: str, prompt: str, **kwargs: Any
    ) -> HumanRequest:
        return await self._do(self._calls.create_human_request(request_id, request_type, prompt, **kwargs))

    async def get_human_request(self, request_id: str) -> tuple[HumanRequest, HumanResponse | None]:
        return await self._do(self._calls.get_human_request(request_id))

    async def submit_human_response(self, request_id: str, response: str, **kwargs: Any) -> HumanResponse:
        return await self._do(self._calls.submit_human_response(request_id, response, **kwargs))

    async def wait_for_human_response(
        self,
        request_id: str,
        poll_interval: float = 5.0,
        timeout: float | None = None,  # noqa: ASYNC109  (the upstream client's signature)
    ) -> HumanResponse:
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            request, answer = await self.get_human_request(request_id)
            if answer is not None:
                return answer
            _check_waiting(request, request_id, deadline)
            await asyncio.sleep(poll_interval)

    async def run_topology(
        self,
        name: str,
        input_data: dict[str, Any],
        runner: str = "local",
        config: dict[str, Any] | None = None,
    ) -> RunAccepted:
        return await self._do(self._calls.run_topology(name, input_data, runner, config))

    async def get_execution(self, execution_id: str) -> ExecutionOut:
        return await self._do(self._calls.get_execution(execution_id))

    async def list_executions(self, **filters: Any) -> list[ExecutionOut]:
        return await self._do(self._calls.list_executions(**filters))

    async def list_steps(self, execution_id: str) -> list[StepOut]:
        return await self._do(self._calls.list_steps(execution_id))

    async def cancel_execution(self, execution_id: str) -> ExecutionOut:
        return await self._do(self._calls.cancel_execution(execution_id))

    async def resume_execution(self, execution_id: str) -> RunAccepted:
        return await self._do(self._calls.resume_execution(execution_id))

    async def fork_execution(
        self,
        execution_id: str,
        at: str,
        *,
        model: str | None = None,
        agents: dict[str, str] | None = None,
        input_data: dict[str, Any] | None = None,
        set_output: dict[str, str] | None = None,
    ) -> RunAccepted:
        return await self._do(
            self._calls.fork_execution(
                execution_id, at, model=model, agents=agents, input=input_data, set_output=set_output
            )
        )

    async def diff_executions(self, a: str, b: str) -> ExecutionDiff:
        return await self._do(self._calls.diff_executions(a, b))

    async def stream_events(self, execution_id: str) -> AsyncIterator[dict[str, Any]]:
        parser = _SseParser()
        call = _Call("GET", f"/v1/executions/{_path(execution_id)}/events", _json)
        async with self._http.stream("GET", call.path, timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(call, response)
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event


def _check_waiting(request: HumanRequest, request_id: str, deadline: float | None) -> None:
    if request.status in ("expired", "cancelled"):
        raise HumanRequestExpiredError(f"human request {request_id!r} {request.status} without a response")
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"no response to human request {request_id!r} yet")
