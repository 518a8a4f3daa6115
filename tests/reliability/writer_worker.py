"""One writer process of the concurrent-writers test: COUNT concurrent executions against URL.

`python writer_worker.py URL COUNT TAG` prints one JSON line: the status and error of every run.
"""

from __future__ import annotations

import asyncio
import json
import sys

import reliability_writers as writers

from qmcp.agentframework.runners import AsyncRunner


async def main(url: str, count: int, tag: str) -> None:
    writers.register()
    runner = AsyncRunner(db_url=url, max_concurrent=4)
    topology, agents = writers.team()
    results = await asyncio.gather(
        *(runner.run(topology, agents, {"prompt": f"{tag} task {i}"}) for i in range(count)),
        return_exceptions=True,
    )
    print(
        json.dumps(
            [
                {"status": "raised", "error": f"{type(r).__name__}: {r}"}
                if isinstance(r, BaseException)
                else {"status": str(r.status), "error": r.error}
                for r in results
            ]
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
