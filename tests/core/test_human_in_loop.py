"""human_in_loop: pause → respond → resume, rejection, timeout, input gates."""

from __future__ import annotations

import asyncio
import re
import uuid
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmcp.agentframework.errors import ConflictError, InvalidConfigError
from qmcp.agentframework.models import ExecutionStatus, Topology, gate_id_forms, gate_key, gate_request_id
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database


def team(agent, model, gate: dict) -> dict:
    return {
        "draft": agent("drafter", "writer", model=model),
        "publish": agent(
            "publisher", "writer", model=model, capabilities=["human_in_loop"], mixins={"human_in_loop": gate}
        ),
        "announce": agent("announcer", "writer", model=model),
    }


PIPELINE = Topology(name="gated", topology_type="pipeline")


async def _pending(url, execution_id):
    async with Database(url) as db:
        return await db.list_human_requests(execution_id=execution_id, status="pending")


async def test_after_gate_pauses_then_approval_resumes(db_url, agent, scripted):
    model, script = scripted(replies=lambda p, i: f"r{i}")
    runner = LocalRunner(db_url=db_url)
    paused = await runner.run(PIPELINE, team(agent, model, {"when": "after"}), {"prompt": "launch"})
    assert paused.status == ExecutionStatus.PAUSED and "waiting for a human" in paused.error
    (request,) = await _pending(db_url, paused.execution_id)
    assert request.options == ["approve", "reject"] and "r1" in request.prompt
    assert paused.human_request_id == request.id  # what to answer, without reading the error text
    assert len(script.calls) == 2  # the gated step ran and is durable; nothing after it

    again = await runner.resume(paused.execution_id)  # no answer yet: still paused, no new request
    assert again.status == ExecutionStatus.PAUSED and len(await _pending(db_url, paused.execution_id)) == 1
    assert again.human_request_id == request.id
    read_back = await runner.cancel(paused.execution_id, wait=0)  # a run read back from the database
    assert read_back.status == ExecutionStatus.CANCELLED and read_back.human_request_id is None

    done = await runner.respond(request.id, "approve")
    assert done.status == ExecutionStatus.COMPLETED, done.error
    assert done.output["output"] == "r2" and len(script.calls) == 3  # approved step not called again
    async with Database(db_url) as db:
        (answered,) = await db.list_human_requests(execution_id=done.execution_id)
        answer = await db.get_human_response(answered.id)
    assert (answered.status, answered.key, answered.request_type) == (
        "responded",
        "pipeline/1:publish#human-after",
        "approval",
    )
    assert answered.id == f"{done.execution_id}:pipeline.1:publish~23human-after"  # safe in a URL path
    assert answered.context == {
        "execution_id": str(done.execution_id),
        "step": "pipeline/1:publish",
        "slot": "publish",
        "agent": "publisher",
        "gate": "after",
    }
    assert answer is not None and answer.response == "approve"


async def test_a_gate_with_its_own_question_shows_the_reply_it_asks_about(sqlite_url, agent, scripted):
    model, _ = scripted(replies=lambda p, i: f"draft number {i}")
    runner = LocalRunner(db_url=sqlite_url)
    paused = await runner.run(
        PIPELINE, team(agent, model, {"prompt": "Publish this draft?"}), {"prompt": "x"}
    )
    (request,) = await _pending(sqlite_url, paused.execution_id)
    assert request.prompt == "Publish this draft?\ndraft number 1"
    assert "Publish this draft?\ndraft number 1" in paused.error


async def test_rejection_cancels(sqlite_url, agent, scripted):
    model, _ = scripted()
    runner = LocalRunner(db_url=sqlite_url)
    paused = await runner.run(PIPELINE, team(agent, model, {}), {"prompt": "launch"})
    (request,) = await _pending(sqlite_url, paused.execution_id)
    result = await runner.respond(request.id, "reject")
    assert result.status == ExecutionStatus.CANCELLED and "a human answered 'reject'" in result.error
    with pytest.raises(ConflictError, match="already been responded to"):
        await runner.respond(request.id, "approve")


async def test_unknown_answer_is_refused(sqlite_url, agent, scripted):
    model, _ = scripted()
    runner = LocalRunner(db_url=sqlite_url)
    paused = await runner.run(PIPELINE, team(agent, model, {}), {"prompt": "launch"})
    (request,) = await _pending(sqlite_url, paused.execution_id)
    with pytest.raises(InvalidConfigError, match=r"Response must be one of: \['approve', 'reject'\]"):
        await runner.respond(request.id, "maybe")


async def test_timeout_fails_the_execution(sqlite_url, agent, scripted):
    model, _ = scripted()
    runner = LocalRunner(db_url=sqlite_url)
    paused = await runner.run(PIPELINE, team(agent, model, {"timeout_seconds": 0.05}), {"prompt": "x"})
    await asyncio.sleep(0.1)
    result = await runner.resume(paused.execution_id)
    assert result.status == ExecutionStatus.FAILED and "within 0.05s" in result.error


async def test_before_gate_for_free_text_input(sqlite_url, agent, scripted):
    model, script = scripted(replies=lambda p, i: f"r{i}")
    runner = LocalRunner(db_url=sqlite_url)
    gate = {"when": "before", "options": [], "prompt": "Which market?"}
    paused = await runner.run(PIPELINE, team(agent, model, gate), {"prompt": "launch"})
    assert len(script.calls) == 1  # the gated step has not called its model
    (request,) = await _pending(sqlite_url, paused.execution_id)
    assert (
        request.prompt.startswith("Which market?\n") and "launch" in request.prompt
    )  # with what it asks about
    assert (request.request_type, request.options) == ("input", None)
    done = await runner.respond(request.id, "Japan")
    assert done.status == ExecutionStatus.COMPLETED
    assert script.calls[1].prompt.endswith("Human input: Japan")


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(max_size=60))
def test_gate_ids_are_safe_in_a_url_path_and_one_to_one(key):
    """Upstream's client puts ids into URL paths as they are: a gate's id needs no encoding there, and
    its step key reads back from it (so two gates never share an id)."""
    execution_id = uuid.UUID(int=7)
    request_id = gate_request_id(execution_id, key)
    assert re.fullmatch(r"[0-9a-f-]{36}:[A-Za-z0-9_:.~-]*", request_id)
    assert quote(request_id, safe=":") == request_id
    assert gate_key(request_id) == key
    if "#" in key:  # every gate key of an earlier version held `#`: its raw id finds the safe one too
        assert gate_id_forms(f"{execution_id}:{key}") == [f"{execution_id}:{key}", request_id]


def test_a_gate_id_reads_as_its_step():
    request_id = gate_request_id(uuid.UUID(int=7), "compound/1:review/crosscheck/checker-2#human-before")
    assert request_id.split(":", 1)[1] == "compound.1:review.crosscheck.checker-2~23human-before"
    assert gate_id_forms("deploy-1") == ["deploy-1"]  # a client's own id has one form
