"""Shared by the reliability tests: the environment of their worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def worker_env() -> dict[str, str]:
    """Workers import this directory's helpers and this tree's qmcp (not another editable install)."""
    path = [str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
