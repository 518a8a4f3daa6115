"""Token streaming through pydantic-ai's OpenAI adapter, against an OpenAI-compatible server on loopback
(`http.server` in a thread, answering chat completions streamed as Server-Sent Events, or whole)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qmcp.agentframework.llm import call_model, resolve_model

PIECES = ["The ", "sky ", "is ", "blue ", "because ", "of ", "Rayleigh ", "scattering."]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        usage = {"prompt_tokens": 21, "completion_tokens": len(PIECES), "total_tokens": 21 + len(PIECES)}
        base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            answer = base | {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(PIECES)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        chunk = base | {"object": "chat.completion.chunk"}
        frames = [chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
        frames += [chunk | {"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in PIECES]
        frames += [chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        frames += [chunk | {"choices": [], "usage": usage}]
        for frame in frames:
            self.wfile.write(f"data: {json.dumps(frame)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(  # a short poll: shutdown() waits for one
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def test_an_openai_compatible_server_streams_its_reply(endpoint):
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/v1"
    model = resolve_model("vllm:qwen-test", base_url=url)
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    whole = await call_model(model, "vllm:qwen-test", system="Be brief.", messages=messages, settings={})
    pieces: list[str] = []
    streamed = await call_model(
        model, "vllm:qwen-test", system="Be brief.", messages=messages, settings={}, on_delta=pieces.append
    )
    assert [r.get("stream", False) for r in endpoint.requests] == [False, True]
    assert pieces == PIECES and "".join(pieces) == streamed.text == whole.text
    assert (
        (streamed.input_tokens, streamed.output_tokens)
        == (whole.input_tokens, whole.output_tokens)
        == (21, 8)
    )
