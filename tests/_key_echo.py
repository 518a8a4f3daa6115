"""A provider on 127.0.0.1 that refuses every call with 401, quoting the key it was sent (as OpenAI's
error does), for the tests that a key never shows, whatever its variable is named."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ODD_VARIABLE = "LLM_CREDENTIAL"
"""A key variable whose name says nothing of a key."""


def odd_key() -> str:
    """A fresh key shaped like no provider's (so only its value can tell it), unique to one test."""
    return f"cred{uuid.uuid4().hex}"


class _Echo(BaseHTTPRequestHandler):
    seen: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        key = self.headers.get("Authorization", "").split()[-1]
        self.seen.append(key)
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def key_echo() -> Iterator[tuple[str, list[str]]]:
    """The provider's base URL, and the keys it was sent."""
    seen: list[str] = []
    handler = type("Echo", (_Echo,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def keyed_team(base_url: str) -> dict[str, object]:
    """One agent reading its key from `ODD_VARIABLE`, in a one-step pipeline `keyed`."""
    return {
        "agents": [
            {
                "name": "keyed",
                "role": "writer",
                "config": {
                    "model": "openai-compatible:gpt-x",
                    "base_url": base_url,
                    "api_key_env": ODD_VARIABLE,
                },
            }
        ],
        "topologies": [{"name": "keyed", "type": "pipeline", "agents": {"only": "keyed"}}],
    }
