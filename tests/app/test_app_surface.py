"""`qmcp.app`'s public names: one list, each name importable, and the wire shapes light enough for
`qmcp.client` (no runners, no store)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qmcp.app


def test_every_exported_name_resolves_and_the_list_is_pinned() -> None:
    assert set(qmcp.app.__all__) == set(qmcp.app._EXPORTS) and len(qmcp.app.__all__) == len(qmcp.app._EXPORTS)
    assert all(getattr(qmcp.app, name) is not None for name in qmcp.app.__all__)


@pytest.mark.slow  # a fresh interpreter's imports
def test_the_client_and_the_shapes_import_no_runner_and_no_store() -> None:
    code = (
        "import sys, qmcp.client\n"
        "heavy = [m for m in ('qmcp.agentframework.runners', 'qmcp.agentframework.store', 'sqlmodel') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
