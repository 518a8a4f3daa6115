"""One registry class for every extension axis: mixins, topologies and runners.

Each axis has one `Registry` here, at the bottom of the layers, so that the models can check a
name (`AgentConfig.capabilities`, `Topology.topology_type`) against the same registry the upper
layers fill with `@mixin`, `@topology` and `@runner`. A registry imports the module that
registers its built-ins the first time it is read (Metaflow's lazy plugin pattern): validating a
model never needs the caller to import the layer above first, and `import qmcp` stays light.

User code registers its own entries by being imported; `import_plugins` imports the modules named
in `QMCP_IMPORTS` (comma-separated), which the CLI, the server and Metaflow steps do on start.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from .errors import InvalidConfigError, MixinError, UserInputError, did_you_mean

__all__ = ["IMPORTS_VARIABLE", "MIXINS", "RUNNERS", "TOPOLOGIES", "Registry", "import_plugins"]

T = TypeVar("T")

IMPORTS_VARIABLE = "QMCP_IMPORTS"
"""Modules imported before the CLI, the server or a Metaflow step reads a registry: your `@topology`,
`@mixin`, `@runner` classes and `register_model` calls."""


class Registry(Generic[T]):
    """Entries of one kind by name; unknown names are one-line errors listing the known ones."""

    def __init__(self, kind: str, *, builtins: str, error: type[UserInputError] = UserInputError) -> None:
        self.kind = kind
        self._builtins = builtins
        self._error = error
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._importing = False
        self._lock = threading.RLock()

    def _load(self) -> None:
        """Import the module that registers the built-ins, once; its own lookups while it imports
        see what it has registered so far, other threads wait for it."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._importing:
                return
            self._importing = True
            try:
                importlib.import_module(self._builtins)
            finally:
                self._importing = False
                self._loaded = True

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`, replacing an entry of that name."""
        if not isinstance(name, str) or not name:
            raise self._error(f"a {self.kind} needs a non-empty string name, not {name!r}")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget `name` (tests, plugins that unload); unknown names are ignored."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[str(name)]
        except KeyError:
            raise self._error(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The one-line message for a name nobody registered."""
        names = self.names()
        known = ", ".join(names) or "none"
        return f"unknown {self.kind} {str(name)!r}; {did_you_mean(name, names)}known {self.kind}s: {known}"

    def check(self, name: str) -> str:
        """`name` if registered, else the error saying which names are (for validators)."""
        self.get(name)
        return str(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs, by name."""
        self._load()
        return iter(sorted(self._entries.items()))


MIXINS: Registry[type] = Registry("mixin", builtins="qmcp.agentframework.mixins", error=MixinError)
TOPOLOGIES: Registry[type] = Registry(
    "topology type", builtins="qmcp.agentframework.topologies", error=InvalidConfigError
)
RUNNERS: Registry[type] = Registry("runner", builtins="qmcp.agentframework.runners")


def import_plugins(names: Iterable[str] | None = None, variable: str = IMPORTS_VARIABLE) -> list[str]:
    """Import the modules `names` (default: those in the environment `variable`); their names.

    A module that cannot be imported is a one-line `InvalidConfigError` naming it and why.
    """
    if names is None:
        names = os.environ.get(variable, "").split(",")
    imported = []
    for name in filter(None, (n.strip() for n in names)):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise InvalidConfigError(
                f"{variable} names {name!r}, which cannot be imported: {error}"
            ) from None
        imported.append(name)
    return imported
