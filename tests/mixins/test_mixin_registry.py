"""The mixin registry: the built-in mixins, dependency order, cycles, and the hook order in a step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

import qmcp.agentframework.mixins as mixins
from qmcp.agentframework.errors import MixinError
from qmcp.agentframework.mixins import BaseMixin, MixinInfo, MixinRegistry, mixin
from qmcp.agentframework.models import AgentCapability, ExecutionStatus
from qmcp.cli import app

BUILT_IN = ["human_in_loop", "memory", "reasoning", "structured_output", "tool_use"]


def test_public_names_are_pinned():
    assert mixins.__all__ == [
        "REASONING_STYLES",
        "BaseMixin",
        "HumanInLoopMixin",
        "MemoryMixin",
        "MixinContext",
        "MixinInfo",
        "MixinRegistry",
        "ReasoningMixin",
        "RunResources",
        "StructuredOutputMixin",
        "ToolUseMixin",
        "mixin",
        "python_tool",
        "register_tool",
        "registered_tools",
        "unregister_tool",
    ]
    assert all(hasattr(mixins, name) for name in mixins.__all__)


def test_every_capability_has_a_registered_mixin():
    listed = {info.name: info for info in MixinRegistry.list_all()}
    assert set(BUILT_IN) <= set(listed) and {c.value for c in AgentCapability} == set(BUILT_IN)
    for name in BUILT_IN:
        info = listed[name]
        assert isinstance(info, MixinInfo) and info.version == "1.0" and info.description
        assert info.dependencies == ()
        assert isinstance(MixinRegistry.create(name), MixinRegistry.get(name))


def test_cli_lists_the_mixins():
    result = CliRunner().invoke(app, ["agents", "mixins", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.output)] == BUILT_IN


@pytest.fixture
def throwaway() -> Iterator[None]:
    """Mixins a → b → c, a cycle x → y → x, and one depending on a mixin nobody registered."""

    def define(name: str, *dependencies: str) -> None:
        mixin(type(name, (BaseMixin,), {"name": name, "dependencies": dependencies}))

    define("tw-a", "tw-b", "tw-c")
    define("tw-b", "tw-c")
    define("tw-c")
    define("tw-x", "tw-y")
    define("tw-y", "tw-x")
    define("tw-lost", "tw-nowhere")
    yield
    for name in ("tw-a", "tw-b", "tw-c", "tw-x", "tw-y", "tw-lost"):
        MixinRegistry.unregister(name)


def test_dependencies_come_first_once(throwaway):
    assert MixinRegistry.resolve(["tw-a"]) == ["tw-c", "tw-b", "tw-a"]
    assert MixinRegistry.resolve(["tw-c", "memory", "tw-a", "tw-b"]) == ["tw-c", "memory", "tw-b", "tw-a"]
    assert next(i for i in MixinRegistry.list_all() if i.name == "tw-a").dependencies == ("tw-b", "tw-c")


def test_cycles_and_unknown_dependencies_are_errors(throwaway):
    with pytest.raises(MixinError, match="mixin dependencies form a cycle: tw-x -> tw-y -> tw-x"):
        MixinRegistry.resolve(["tw-x"])
    with pytest.raises(MixinError, match="unknown mixin 'tw-nowhere'; known mixins: human_in_loop"):
        MixinRegistry.resolve(["tw-lost"])


async def test_mixins_combine_in_one_step(sqlite_url, agent, tool_model, run_one):
    """Tools, memory and reasoning on one agent: each leaves its record on the same step."""
    model = tool_model([("basename", {"p": "/plans/lisbon.txt"}), ("nothing", {})])
    combined: dict[str, Any] = {
        "tool_use": {"tools": ["os.path:basename"]},
        "reasoning": {"style": "critique"},
    }
    polymath = agent(
        "polymath", model=model.name, capabilities=["tool_use", "memory", "reasoning"], mixins=combined
    )
    result, (step,) = await run_one(sqlite_url, polymath, "Summarise the plan")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert [(c["result"], c["error"]) for c in step.output["tool_calls"]] == [
        ("lisbon.txt", None),
        (None, "unknown tool 'nothing'; available: basename"),
    ]
    assert set(step.output["mixins"]) == {"memory", "reasoning"}
    assert step.output["mixins"]["reasoning"]["style"] == "critique"
    assert "Draft an answer, critique the draft" in model.systems[0]
