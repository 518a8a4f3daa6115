"""Fork server of the kill-and-resume trials: imports qmcp once, then runs each trial in a forked child.

Reads one database URL per line on stdin and answers with the pid of a child that runs the mixed
team's compound on AsyncRunner against that database; the test kills that child with SIGKILL.
Forking keeps each trial a separate process without paying for Python and qmcp's imports 30 times.
The server itself never opens a database, an event loop or a thread, so forking it is safe.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import reliability_team

from qmcp.agentframework.models import ExecutionStatus
from qmcp.agentframework.runners import AsyncRunner

LATENCY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.03


def trial(url: str) -> int:
    """Run the compound once; the exit status says whether it completed."""
    reliability_team.register(LATENCY)
    runner = AsyncRunner(db_url=url, max_concurrent=4)
    result = asyncio.run(runner.run(reliability_team.compound(), {}, reliability_team.INPUT))
    return 0 if result.status == ExecutionStatus.COMPLETED else 1


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            status = 2
            try:
                status = trial(line.strip())
            finally:
                os._exit(status)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
