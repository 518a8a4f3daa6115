"""The server imports the modules named in QMCP_IMPORTS before it serves, so runs may use their types."""

from __future__ import annotations

import pytest

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.agentframework.topologies import TopologyRegistry
from qmcp.server import create_app


def test_the_server_imports_qmcp_imports_before_serving(monkeypatch, tmp_path):
    monkeypatch.setenv("QMCP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/server.db")
    monkeypatch.setenv("QMCP_IMPORTS", "ext_plugin")
    assert create_app() is not None and "relay" in TopologyRegistry.list()
    monkeypatch.setenv("QMCP_IMPORTS", "ext_plugin,missing_plugin")
    with pytest.raises(
        InvalidConfigError, match=r"^QMCP_IMPORTS names 'missing_plugin', which cannot be imported"
    ):
        create_app()
