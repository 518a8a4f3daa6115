"""What a flow's join reads when `MetaflowRunner` completed the execution: its output and totals.

When every call of a `foreach` was prepared (`call_prepared`), no task runs the topology's code: the
runner, which has it loaded, runs it on the recorded calls as soon as the last one is recorded and
completes the execution (`metaflow_helpers.complete_when_recorded`). The join then reads the
output with `sqlite3`, waiting the moments the runner may still need; should the runner not complete
it (a call the topology's code does not end on, a runner gone), the join runs the code as ever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from ..errors import QmcpError
from ..models import ExecutionStatus, Usage
from ._prepared import prepared_calls
from ._sqlite import TOTALS, connect_existing

__all__ = ["end_task_without_retry", "ended_execution", "output_text"]

_WAIT_SECONDS = 5.0
"""How long a join waits for the runner to complete the execution; it takes milliseconds."""
_POLL_SECONDS = 0.01
_READ = f"SELECT status, owner_token, cancel_requested_at, output_data, {', '.join(TOTALS)} FROM executions WHERE id = ?"


def output_text(output: Any) -> str:
    """The main text of a topology's output document, to feed into the next one."""
    if isinstance(output, dict):
        for key in ("answer", "output", "verdict", "primary_output"):
            value = output.get(key)
            if isinstance(value, str) and value:
                return value
            if value is not None and not isinstance(value, dict | list):
                return str(value)
    return str(output)


def ended_execution(execution_id: str, results: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The join's artifacts (`output`, `answer`, `usage`) when every result joined is a prepared call that
    succeeded in this run and the runner completed the execution; None otherwise."""
    prepared = prepared_calls(execution_id)
    if prepared is None or not results:
        return None
    if any(r.get("error") or r.get("key") not in prepared.calls for r in results):
        return None
    execution = uuid.UUID(execution_id).hex
    deadline = time.monotonic() + _WAIT_SECONDS
    with contextlib.closing(connect_existing(prepared.database, "ro")) as conn:
        while True:
            row = conn.execute(_READ, (execution,)).fetchone()
            if row is None or row[1] != prepared.owner_token:
                return None  # gone, or taken over: whoever holds it ends it
            status, _, cancel_requested, output_data, *totals = row
            if status == ExecutionStatus.COMPLETED.name and output_data is not None:
                output = json.loads(output_data)
                usage = Usage(int(totals[0]), int(totals[1]), int(totals[2]), float(totals[3]))
                return {"output": output, "answer": output_text(output), "usage": dataclasses.asdict(usage)}
            if status != ExecutionStatus.RUNNING.name or cancel_requested or time.monotonic() > deadline:
                return None
            time.sleep(_POLL_SECONDS)


def end_task_without_retry(error: QmcpError) -> NoReturn:
    """End this Metaflow task with the exit status Metaflow's runtime never retries (its own for a killed
    task), whatever `@retry` says: the step has recorded the failure (the execution failed with it), and
    another attempt would only pay for the same refusal again. Where an orchestrator retries anyway
    (Argo, Step Functions), the retry replays a recorded permanent failure instead of calling it."""
    from metaflow.exception import METAFLOW_EXIT_DISALLOW_RETRY

    print(f"{error}; this task is not retried", file=sys.stderr)
    raise SystemExit(METAFLOW_EXIT_DISALLOW_RETRY) from error
