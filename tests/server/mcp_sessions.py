"""What the MCP tests share: a session of the official SDK's client with the in-process app, reading a
tool's result, and where the MCP Inspector (npm) is installed."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from serving import BASE_URL

INSPECTOR_ENV = "QMCP_MCP_INSPECTOR"
INSPECTOR_DEFAULT = Path.home() / ".cache/qmcp-ci/inspector/node_modules/.bin/mcp-inspector"
"""Where `.ci/run` installs the Inspector (`npm install --prefix ~/.cache/qmcp-ci/inspector`)."""


@contextlib.asynccontextmanager
async def in_process_session(app: FastAPI, headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """An initialised `ClientSession` speaking streamable HTTP to `app`'s /mcp, without a socket;
    `headers` go with every request."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    transport = httpx2.ASGITransport(app=app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60, headers=headers) as http,
        streamable_http_client(f"{BASE_URL}/mcp", http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        yield session


def payload(result: Any) -> Any:
    """A successful tool result's structured content, else its text as JSON (or the text itself)."""
    assert not result.is_error, result
    if result.structured_content is not None:
        content = result.structured_content
        return (
            content.get("result", content)
            if isinstance(content, dict) and set(content) == {"result"}
            else content
        )
    text = result.content[0].text
    try:
        return json.loads(text)
    except ValueError:
        return text


def error_text(result: Any) -> str:
    """A failed tool result's one text block."""
    assert result.is_error, result
    [block] = result.content
    return str(block.text)


def inspector_path() -> Path:
    """Where the MCP Inspector's launcher should be: $QMCP_MCP_INSPECTOR, else `.ci/run`'s install."""
    given = os.environ.get(INSPECTOR_ENV)
    return Path(given) if given else INSPECTOR_DEFAULT


def inspector() -> Path | None:
    """The MCP Inspector's launcher, or None when it is not there."""
    path = inspector_path()
    return path if path.is_file() and os.access(path, os.X_OK) else None
