"""`BaseTopology`, the `TopologyRegistry` and the `@topology` decorator."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import InvalidConfigError, MissingSlotError
from ..models import AgentType, TopologyConfig
from ..registry import TOPOLOGIES
from ._context import StepContext
from ._plan import StepPlan

__all__ = ["BaseTopology", "TopologyRegistry", "topology"]


class BaseTopology(ABC):
    """One topology type: validates its slots and config, then runs over a `StepContext`.

    Instances hold only the validated config; run state lives in the context, so one
    instance can run many executions. Control flow must depend only on the input and on
    step outputs, so that replay on resume takes the same path.
    """

    topology_type: ClassVar[str]
    """The name stored in `Topology.topology_type` and written in team files' `type:`."""
    config_class: ClassVar[type[TopologyConfig]] = TopologyConfig
    """The schema of `Topology.config` for this type (unknown keys are errors)."""
    shape_note: ClassVar[str] = "its steps are decided at run time"
    """Why a topology without a `step_plan` has no fixed shape (its Metaflow flow says so)."""

    def __init__(self, config: TopologyConfig | Mapping[str, Any] | None = None) -> None:
        config_class = self.config_class
        if isinstance(config, config_class):
            self.config = config
        else:
            self.config = config_class.model_validate(dict(config or {}))

    @abstractmethod
    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        """Raise `MissingSlotError` / `InvalidConfigError` naming what is wrong, before any step runs.

        `agents` maps slot names to agents, in position order.
        """

    @abstractmethod
    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        """Run the topology and return its output document."""

    def step_plan(self, agents: Mapping[str, AgentType]) -> StepPlan | None:
        """The agent calls this topology makes for this team, known before it runs, or None.

        Return one when they are fixed by the team and config (their keys from the key builders
        `run()` uses): a Metaflow flow then gives each call a step. None, the default, runs the whole
        topology in one flow step; resume replays its finished calls either way.
        """
        return None

    @staticmethod
    def require(slots: Sequence[str], *required: str) -> None:
        missing = [s for s in required if s not in slots]
        if missing:
            raise MissingSlotError(f"missing agents for slot(s): {', '.join(missing)}")


_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class TopologyRegistry:
    """Topology types by name (the shared `TOPOLOGIES` registry); `@topology` adds your own."""

    @classmethod
    def register(cls, topology_class: type[BaseTopology]) -> type[BaseTopology]:
        name = getattr(topology_class, "topology_type", None)
        if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
            raise InvalidConfigError(
                f"{topology_class.__name__}.topology_type must be 1-32 lowercase letters, digits, '_' or '-', "
                f"starting with a letter; got {name!r}"
            )
        config_class = getattr(topology_class, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, TopologyConfig)):
            raise InvalidConfigError(
                f"{topology_class.__name__}.config_class must be a TopologyConfig subclass, not {config_class!r}"
            )
        return TOPOLOGIES.add(str(name), topology_class)

    @classmethod
    def unregister(cls, topology_type: str) -> None:
        TOPOLOGIES.remove(str(topology_type))

    @classmethod
    def get(cls, topology_type: str) -> type[BaseTopology]:
        found: type[BaseTopology] = TOPOLOGIES.get(str(topology_type))
        return found

    @classmethod
    def create(cls, topology_type: str, config: Mapping[str, Any] | None = None) -> BaseTopology:
        return cls.get(topology_type)(config)

    @classmethod
    def list(cls) -> list[str]:
        return TOPOLOGIES.names()


def topology(topology_class: type[BaseTopology]) -> type[BaseTopology]:
    """Class decorator registering a topology type under its `topology_type` name."""
    return TopologyRegistry.register(topology_class)
