"""`qmcp` with the server tests' doubles (`doubles.py`) registered: the real CLI, the real server.

DRIVER_LATENCY, DRIVER_WORDS and DRIVER_CHUNK_DELAY set the doubles' `latency`, `words` and
`chunk_delay`; each paid `scripted:slow` call appends a line to DRIVER_CALL_LOG, so tests can count
what was paid for across processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from doubles import Doubles  # this script's directory is first on sys.path


def _log_call(role: str) -> None:
    log = os.environ.get("DRIVER_CALL_LOG")
    if log:
        with open(log, "a") as calls:
            calls.write(f"{role}\n")


if os.environ.get("QMCP_TEST_SPAN_LOG"):  # an OpenTelemetry SDK writing every span to that file
    sys.path.insert(0, str(Path(__file__).parents[1] / "metaflow"))
    import mf_tracing  # noqa: F401

Doubles(
    latency=float(os.environ.get("DRIVER_LATENCY", "0")),
    words=int(os.environ.get("DRIVER_WORDS", "12")),
    chunk_delay=float(os.environ.get("DRIVER_CHUNK_DELAY", "0.05")),
    on_paid=_log_call,
).register()

from qmcp.cli import main  # noqa: E402

sys.argv[0] = "qmcp"
main()
