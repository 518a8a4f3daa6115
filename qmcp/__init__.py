"""qmcp: durable teams of LLM agents in topologies, run in-process, concurrently or on Metaflow.

The framework lives in `qmcp.agentframework` (models, llm, store, topologies, runners); the
command line in `qmcp.cli`. Importing `qmcp` itself loads nothing heavy.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qmcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
