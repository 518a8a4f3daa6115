"""structured_output: schema or pydantic model per agent, JSON extracted, re-asked, and stored parsed."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from qmcp.agentframework.errors import MixinError
from qmcp.agentframework.llm import JSON_MARKER
from qmcp.agentframework.mixins import StructuredOutputMixin
from qmcp.agentframework.models import ExecutionStatus, StepStatus

TRIP_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "people": {"type": "integer"}},
    "required": ["city", "people"],
}


@pytest.fixture
def trip_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reference to a pydantic model with a constraint a JSON schema check does not enforce."""
    (tmp_path / "qmcp_test_models.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel, Field

            class Trip(BaseModel):
                city: str
                people: int = Field(ge=1)
                tags: list[str] = []

            NOT_A_MODEL = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "qmcp_test_models", raising=False)
    return "qmcp_test_models:Trip"


def structured(agent, llm: str = "test", output_schema=None, **options):
    return agent(
        "structurer",
        model=llm,
        capabilities=["structured_output"],
        output_schema=output_schema,
        mixins={"structured_output": options},
    )


@pytest.mark.parametrize("where", ["output_schema", "option"])
async def test_json_schema_reply_is_parsed_and_stored(db_url, agent, scripted, run_one, where):
    model, script = scripted(replies=['Sure:\n```json\n{"city": "Lisbon", "people": "12"}\n```'])
    if where == "output_schema":
        structurer = structured(agent, model, output_schema=TRIP_SCHEMA)
    else:
        structurer = structured(agent, model, schema=TRIP_SCHEMA)
    result, (step,) = await run_one(db_url, structurer, "Plan a trip")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert step.output["data"] == {"city": "Lisbon", "people": 12}
    assert step.output["fallback"] is False
    assert f"{JSON_MARKER}\n{json.dumps(TRIP_SCHEMA, separators=(',', ':'))}" in script.calls[0].prompt


async def test_pydantic_model_validates_and_stores_the_dump(sqlite_url, agent, scripted, run_one, trip_model):
    model, script = scripted(replies=['{"city": "Porto", "people": 3}'])
    result, (step,) = await run_one(sqlite_url, structured(agent, model, model=trip_model))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert step.output["data"] == {"city": "Porto", "people": 3, "tags": []}
    assert '"people":{"minimum":1' in script.calls[0].prompt.replace(" ", "")


async def test_malformed_reply_is_asked_again(sqlite_url, agent, scripted, run_one, trip_model):
    model, script = scripted(replies=["I would say Porto.", '{"city": "Porto", "people": 2}'])
    result, (step,) = await run_one(sqlite_url, structured(agent, model, model=trip_model))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert len(script.calls) == 2 and step.attempts == 2
    assert script.calls[1].prompt.startswith("That reply was not valid: no JSON object found in the reply.")
    assert step.output["data"] == {"city": "Porto", "people": 2, "tags": []}


async def test_reasks_run_out(sqlite_url, agent, scripted, run_one):
    model, script = scripted(replies=['{"city": "Porto"}'])
    result, (step,) = await run_one(sqlite_url, structured(agent, model, schema=TRIP_SCHEMA, max_reasks=1))
    assert result.status == ExecutionStatus.FAILED
    assert len(script.calls) == 2
    assert step.status == StepStatus.FAILED
    assert step.error == (
        "MalformedOutputError: reply is not the JSON asked for after 2 tries: missing keys: people"
    )
    assert "malformed model output" in result.error


async def test_model_constraints_are_checked_and_reasked(sqlite_url, agent, scripted, run_one, trip_model):
    model, script = scripted(replies=['{"city": "Porto", "people": 0}'])
    result, (step,) = await run_one(sqlite_url, structured(agent, model, model=trip_model))
    assert result.status == ExecutionStatus.FAILED
    assert step.status == StepStatus.FAILED and step.attempts == len(script.calls) == 3
    assert "greater than or equal to 1" in script.calls[1].prompt  # the model was told what was wrong
    assert step.error == (
        "MalformedOutputError: reply is not the JSON asked for after 3 tries: reply does not fit "
        "qmcp_test_models:Trip: people: Input should be greater than or equal to 1"
    )


async def test_a_schema_the_topology_asks_for_wins(agent, hook_context, trip_model):
    own = {"type": "object", "properties": {"approved": {"type": "boolean"}}}
    ctx = hook_context(structured(agent, model=trip_model, max_reasks=4), schema=own)
    mixin = StructuredOutputMixin()
    await mixin.before_model(ctx)
    assert (ctx.schema, ctx.reasks) == (own, 1)
    ctx.data = {"approved": True}
    await mixin.after_response(ctx)
    assert ctx.data == {"approved": True}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "enables structured_output without a schema"),
        ({"schema": TRIP_SCHEMA, "model": "qmcp_test_models:Trip"}, "a schema or a model, not both"),
        ({"model": "qmcp_test_models:NOT_A_MODEL"}, "is not a pydantic model"),
        ({"model": "qmcp_test_models:Missing"}, "module 'qmcp_test_models' has no 'Missing'"),
    ],
)
async def test_configuration_errors(agent, hook_context, trip_model, options, message):
    ctx = hook_context(structured(agent, **options))
    with pytest.raises(MixinError, match=message):
        await StructuredOutputMixin().before_model(ctx)


def test_wrong_option_types_fail_when_the_agent_is_defined(agent):
    with pytest.raises(
        ValidationError, match=r"mixins.structured_output.max_reasks: Input should be greater"
    ):
        structured(agent, max_reasks=-1)


async def test_with_reasoning_the_answer_is_parsed(sqlite_url, agent, scripted, run_one):
    model, _ = scripted(replies=['Reasoning: Porto is cheap.\nAnswer: {"city": "Porto", "people": 4}'])
    both = agent(
        "both",
        model=model,
        capabilities=["reasoning", "structured_output"],
        mixins={"structured_output": {"schema": TRIP_SCHEMA}},
    )
    result, (step,) = await run_one(sqlite_url, both)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert step.output["data"] == {"city": "Porto", "people": 4}
    assert step.output["mixins"]["reasoning"]["reasoning"] == "Porto is cheap."
    assert step.response == '{"city": "Porto", "people": 4}'
