"""`BaseTopology`, the `TopologyRegistry` and the `@topology` decorator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import InvalidConfigError, MissingSlotError
from ..models import AgentType, TopologyConfig, TopologyType, config_class_for
from ._context import StepContext

__all__ = ["BaseTopology", "TopologyRegistry", "topology"]


class BaseTopology(ABC):
    """One topology type: validates its slots and config, then runs over a `StepContext`.

    Instances hold only the validated config; run state lives in the context, so one
    instance can run many executions. Control flow must depend only on the input and on
    step outputs, so that replay on resume takes the same path.
    """

    topology_type: ClassVar[TopologyType]

    def __init__(self, config: TopologyConfig | Mapping[str, Any] | None = None) -> None:
        config_class = config_class_for(self.topology_type)
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

    @staticmethod
    def require(slots: Sequence[str], *required: str) -> None:
        missing = [s for s in required if s not in slots]
        if missing:
            raise MissingSlotError(f"missing agents for slot(s): {', '.join(missing)}")


class TopologyRegistry:
    """Topology types by name; `@topology` adds user-defined ones."""

    _types: ClassVar[dict[str, type[BaseTopology]]] = {}

    @classmethod
    def register(cls, topology_class: type[BaseTopology]) -> type[BaseTopology]:
        cls._types[str(topology_class.topology_type)] = topology_class
        return topology_class

    @classmethod
    def get(cls, topology_type: TopologyType | str) -> type[BaseTopology]:
        try:
            return cls._types[str(topology_type)]
        except KeyError:
            known = ", ".join(sorted(cls._types))
            raise InvalidConfigError(
                f"unknown topology type {str(topology_type)!r}; known types: {known}"
            ) from None

    @classmethod
    def create(
        cls, topology_type: TopologyType | str, config: Mapping[str, Any] | None = None
    ) -> BaseTopology:
        return cls.get(topology_type)(config)

    @classmethod
    def list(cls) -> list[str]:
        return sorted(cls._types)


def topology(topology_class: type[BaseTopology]) -> type[BaseTopology]:
    """Class decorator registering a topology type."""
    return TopologyRegistry.register(topology_class)
