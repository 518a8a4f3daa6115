"""Fixtures for the Metaflow tests: flows and Metaflow's datastore in tmp_path, test models in every step."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import mf_light
import mf_models
import pytest

from qmcp.agentframework.runners.metaflow_helpers import IMPORTS_VARIABLE

HERE = Path(__file__).parent

# Metaflow's vendored yaml imports the `_yaml` shim, which warns from outside `metaflow.*` (so the
# pyproject filter misses it); import Metaflow once, quietly, before the tests do.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import metaflow  # noqa: F401


@pytest.fixture
def flows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where flows are written and Metaflow keeps its datastore; steps import `mf_models`."""
    monkeypatch.delenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(IMPORTS_VARIABLE, "mf_models")
    monkeypatch.setenv("QMCP_TEST_CALL_LOG", str(tmp_path / "calls.log"))
    mf_models.register()
    yield tmp_path / "flows"
    mf_models.unregister()


@pytest.fixture
def light_models(flows_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Steps import `mf_light` instead of `mf_models`: its models load qmcp's model layer alone."""
    monkeypatch.setenv(IMPORTS_VARIABLE, "mf_light")
    mf_light.register()
    yield
    mf_light.unregister()


@pytest.fixture
def model_calls(tmp_path: Path) -> Callable[[], Counter[str]]:
    """Calls of the `counted` and `flaky` models so far, in every process, as `model:role` counts."""

    def count() -> Counter[str]:
        log = tmp_path / "calls.log"
        return Counter(log.read_text().split()) if log.exists() else Counter()

    return count
