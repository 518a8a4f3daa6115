"""The mixin registry: the built-in mixins, dependency order, cycles, and the hook order in a step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import qmcp.agentframework.mixins as mixins
from qmcp.agentframework.errors import InvalidConfigError, MixinError
from qmcp.agentframework.mixins import BaseMixin, MixinInfo, MixinRegistry, NoOptions, mixin
from qmcp.agentframework.models import AgentCapability, AgentConfig, AgentType, ExecutionStatus
from qmcp.agentframework.store import Database
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
        "NoOptions",
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
    names = [row["name"] for row in json.loads(result.output)]
    assert [name for name in names if name in BUILT_IN] == BUILT_IN and names == sorted(
        names
    )  # with any plugin's


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


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            {"tool_use": {"toolz": ["os.path:basename"]}},
            "mixins.tool_use.toolz: Extra inputs are not permitted",
        ),
        (
            {"human_in_loop": {"whenn": "before"}},
            "mixins.human_in_loop.whenn: Extra inputs are not permitted",
        ),
        (
            {"human_in_loop": {"when": "during"}},
            "mixins.human_in_loop.when: Input should be 'before' or 'after'",
        ),
        ({"memory": {"limit": "many"}}, "mixins.memory.limit: Input should be a valid integer"),
        ({"nosuch": {}}, "unknown mixin 'nosuch'; known mixins: human_in_loop, memory"),
    ],
)
async def test_options_are_validated_before_anything_is_written(sqlite_url, run_one, options, says):
    unchecked = AgentType(  # a table model's constructor does not validate: the runner must
        name="careless", config={"model": "test", "capabilities": list(options), "mixins": options}
    )
    with pytest.raises(InvalidConfigError) as refused:
        await run_one(sqlite_url, unchecked)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    async with Database(sqlite_url) as db:
        assert await db.list_executions() == []
        assert await db.list_agents() == []


def test_a_mixin_without_an_options_model_takes_no_options(throwaway):
    assert MixinRegistry.get("tw-c").options_model is NoOptions
    assert AgentConfig(capabilities=["tw-c"], mixins={"tw-c": {}}).mixins == {"tw-c": {}}
    with pytest.raises(ValidationError, match=r"mixins.tw-c.depth: Extra inputs are not permitted"):
        AgentConfig(capabilities=["tw-c"], mixins={"tw-c": {"depth": 2}})


def test_a_mixin_class_must_name_itself_and_its_options_model():
    with pytest.raises(MixinError, match=r"^Nameless.name must be a non-empty string, not None$"):
        mixin(type("Nameless", (BaseMixin,), {}))
    with pytest.raises(MixinError, match=r"^Loose.options_model must be a pydantic model class"):
        mixin(type("Loose", (BaseMixin,), {"name": "tw-loose", "options_model": dict}))
    assert "tw-loose" not in MixinRegistry.names()
