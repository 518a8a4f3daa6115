"""qmcp: durable teams of LLM agents in topologies, run in-process, concurrently or on Metaflow.

The framework lives in `qmcp.agentframework` (models, llm, store, topologies, runners); the
command line in `qmcp.cli`. Importing `qmcp` itself loads nothing heavy.
"""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """`__version__`, read from the installed metadata on first use: looking it up costs tens of
    milliseconds, which `qmcp --help` would pay on every start."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("qmcp")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0.0.0"
    globals()["__version__"] = value
    return value
