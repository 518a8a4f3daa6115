"""metaflow_overhead: qmcp's generated ensemble flow (MetaflowRunner) against a hand-written flow.

Both run locally under Metaflow, in the same environment, with the same model function: the
ratio is what qmcp adds on top of Metaflow (team and execution records, the generated flow's
helpers, durable steps).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from ._common import TASK, Case, Metrics, Skipped, sqlite_url, timed

__all__ = ["make_case"]

_REPO = Path(__file__).resolve().parent.parent
_HAND_WRITTEN = Path(__file__).with_name("flows") / "hand_ensemble_flow.py"


def _environment(workdir: Path, latency: float) -> dict[str, str]:
    """Metaflow's datastore in the work directory; steps import the benchmark's scripted model."""
    from ._mf_model import LATENCY_VARIABLE

    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir / "metaflow"),
        "QMCP_METAFLOW_IMPORTS": "bench._mf_model",
        LATENCY_VARIABLE: str(latency),
        "USERNAME": os.environ.get("USERNAME") or os.environ.get("USER") or "bench",
    }


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children: a flow's Metaflow runtime
    and, through it, every task. Less swayed by other load on the machine than the wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _metaflow_runner() -> Any:
    """`qmcp.agentframework.runners.MetaflowRunner`, or its module while the package does not export it."""
    try:
        from qmcp.agentframework.runners import MetaflowRunner  # type: ignore[attr-defined]
    except ImportError:
        try:
            from qmcp.agentframework.runners._metaflow import MetaflowRunner
        except ImportError:
            raise Skipped("MetaflowRunner not available") from None
    return MetaflowRunner


class Generated:
    """`MetaflowRunner.run` of a 3-member ensemble on the scripted model."""

    def __init__(self, workdir: Path, members: int, latency: float) -> None:
        self.workdir, self.members, self.latency = workdir, members, latency

    async def setup(self) -> None:
        runner_class = _metaflow_runner()
        from qmcp.agentframework.models import AgentConfig, AgentType, EnsembleConfig, Topology, TopologyType

        from ._mf_model import MODEL

        os.environ.update(_environment(self.workdir, self.latency))
        member = AgentType(name="member", config=AgentConfig(model=MODEL).model_dump())
        self.agents = {f"m{i}": member for i in range(self.members)}
        self.topology = Topology(
            name="bench_ensemble",
            topology_type=TopologyType.ENSEMBLE,
            config=EnsembleConfig(aggregation_method="vote").model_dump(),
        )
        self.runner = runner_class(
            output_dir=self.workdir / "flows", db_url=sqlite_url(self.workdir, "mf.db")
        )

    async def run(self) -> Metrics:
        cpu = _cpu_seconds()
        result, seconds = await timed(lambda: self.runner.run(self.topology, self.agents, {"prompt": TASK}))
        if str(result.status) != "completed":
            raise RuntimeError(f"the generated flow ended {result.status}: {result.error}")
        return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu}

    async def close(self) -> None:
        pass


class HandWritten:
    """`python hand_ensemble_flow.py run`, the same shape and model function without qmcp; `plain`: the
    function awaited without pydantic-ai, as the generated flow's offline model answers (like for like)."""

    def __init__(self, workdir: Path, latency: float, plain: bool = False) -> None:
        self.environment = {**os.environ, **_environment(workdir, latency)}
        if plain:
            self.environment["QMCP_BENCH_MODEL_PATH"] = "plain"

    async def setup(self) -> None:
        pass

    async def run(self) -> Metrics:
        argv = [sys.executable, str(_HAND_WRITTEN), "--no-pylint", "run", "--input-json"]
        argv.append(json.dumps({"prompt": TASK}))

        async def flow() -> None:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self.environment,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"the hand-written flow failed: {stderr.decode()[-1000:]}")

        cpu = _cpu_seconds()
        _, seconds = await timed(flow)
        return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu}

    async def close(self) -> None:
        pass


def make_case(framework: str, variant: str, workdir: Path, params: dict[str, Any]) -> Case:
    """qmcp's generated flow, or the hand-written Metaflow flow: its members call the model function
    through pydantic-ai (framework "metaflow") or await it plainly ("metaflow_plain", like for like with
    the generated flow's offline model); variant `ensemble_1s` makes each call last `slow_latency`
    seconds instead of `latency`."""
    latency = params["slow_latency"] if variant == "ensemble_1s" else params["latency"]
    if framework == "qmcp":
        return Generated(workdir, params["members"], latency)
    return HandWritten(workdir, latency, plain=framework == "metaflow_plain")
