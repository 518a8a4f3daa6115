"""qmcp as a library leaves its host's process alone: logging, structlog, frozen objects, open files.

Each case runs a small host program in a subprocess: what it checks is process-global state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test is a host process running qmcp

_TEAM = """
import asyncio, gc, json, logging, sys
from qmcp.agentframework.models import AgentConfig, AgentType, EnsembleConfig, Topology, TopologyType
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig

agents = {f"m{i}": AgentType(name=f"member{i}", config=AgentConfig(model="test").model_dump()) for i in range(30)}
topology = Topology(name="host", topology_type=TopologyType.ENSEMBLE, config=EnsembleConfig().model_dump())

def run(runner):
    return asyncio.run(runner.run(topology, agents, {"prompt": "p"}))
"""


def _host(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = _TEAM + textwrap.dedent(body)
    env = {**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/host.db"}
    env.pop("QMCP_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_plain_run_prints_nothing(tmp_path):
    """The seed's default log level is INFO; a host that configured no logging still sees nothing."""
    done = _host(
        tmp_path,
        """
        result = run(LocalRunner())
        assert str(result.status) == "completed", result.error
        # a warning-level record of qmcp: with no handler configured, not printed either
        from qmcp.observability import get_logger
        get_logger().warning("a.warning", note="unseen")
        """,
    )
    assert done.stdout == "" and done.stderr == ""


def test_a_host_with_logging_gets_records_with_the_run_ids(tmp_path):
    done = _host(
        tmp_path,
        """
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)
        logging.getLogger().addHandler(Keep())
        before = (logging.getLogger().level, [type(h).__name__ for h in logging.getLogger().handlers],
                  logging.getLogger("qmcp").level, logging.getLogger("qmcp").propagate)
        result = run(AsyncRunner(config=RunConfig(log_level="DEBUG", correlation_id="corr-1")))
        after = (logging.getLogger().level, [type(h).__name__ for h in logging.getLogger().handlers],
                 logging.getLogger("qmcp").level, logging.getLogger("qmcp").propagate)
        assert before == after, (before, after)
        mine = [r for r in records if r.name.startswith("qmcp")]
        assert mine and all(r.execution_id == str(result.execution_id) for r in mine)
        assert all(r.correlation_id == "corr-1" for r in mine)
        # a file, not stdout: aiosqlite's thread logs to the host's stdout handler while print writes
        with open("events.json", "w") as out:
            json.dump(sorted({r.qmcp_event for r in mine}), out)
        """,
    )
    events = json.loads((tmp_path / "events.json").read_text())
    assert {"run.start", "run.end", "step.completed"} <= set(events)
    start = next(line for line in done.stdout.splitlines() if " run.start " in line)
    assert start.startswith("INFO qmcp run.start topology=host") and "execution_id=" in start
    assert "correlation_id=corr-1" in start


def test_run_log_level_is_the_lowest_level_a_run_emits(tmp_path):
    done = _host(
        tmp_path,
        """
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(message)s")
        run(LocalRunner(config=RunConfig(log_level="WARNING")))
        """,
    )
    assert "run.start" not in done.stdout and "step." not in done.stdout


def test_a_host_structlog_configuration_and_frozen_objects_are_unchanged_after_runs(tmp_path):
    """The pre-fork idiom: the host freezes its heap; qmcp must not thaw it (gc.unfreeze is global),
    nor replace the host's structlog or logging configuration."""
    done = _host(
        tmp_path,
        """
        import structlog
        structlog.configure(processors=[structlog.processors.KeyValueRenderer()], cache_logger_on_first_use=False)
        config_before = structlog.get_config()
        kept = [[i] for i in range(5000)]  # the host's objects
        gc.freeze()
        kept_ids = {id(x) for x in kept}
        assert not [o for o in gc.get_objects() if id(o) in kept_ids]  # the check below can see a thaw
        frozen = gc.get_freeze_count()
        assert frozen > 5000
        callbacks = list(gc.callbacks)
        # wide enough to freeze the heap (above freeze_heap_above) if the process had nothing frozen
        result = run(AsyncRunner(max_concurrent=50, config=RunConfig(freeze_heap_above=10)))
        assert str(result.status) == "completed", result.error
        run(LocalRunner())
        # frozen objects are not in any collected generation: the host's are all still there
        kept_ids = {id(x) for x in kept}
        assert not [o for o in gc.get_objects() if id(o) in kept_ids]
        assert gc.get_freeze_count() > 0.95 * frozen, (gc.get_freeze_count(), frozen)  # some died, none thawed
        assert gc.callbacks == callbacks
        assert structlog.get_config() == config_before
        assert logging.getLogger().handlers == [] and logging.getLogger("qmcp").handlers[0].__class__.__name__ == "NullHandler"
        print("ok", frozen, gc.get_freeze_count())
        """,
    )
    assert done.stdout.startswith("ok") and done.stderr == ""


def test_without_frozen_objects_a_wide_run_freezes_and_thaws_its_heap(tmp_path):
    done = _host(
        tmp_path,
        """
        from qmcp.agentframework.topologies import _heap
        seen = []
        original = _heap._refreeze
        def spy(phase, info):
            seen.append(gc.get_freeze_count())
            original(phase, info)
        _heap._refreeze = spy
        assert gc.get_freeze_count() == 0
        result = run(AsyncRunner(max_concurrent=50, config=RunConfig(freeze_heap_above=10)))
        assert str(result.status) == "completed"
        assert gc.get_freeze_count() == 0 and _heap._holders == 0
        narrow = run(AsyncRunner(max_concurrent=5, config=RunConfig(freeze_heap_above=10)))
        print("ok")
        """,
    )
    assert done.stdout.strip() == "ok"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
def test_close_engines_releases_the_database_files(tmp_path):
    done = _host(
        tmp_path,
        """
        import os
        from qmcp.agentframework.store import close_engines, engine_cache

        def open_files():
            names = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    names.append(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass
            return [n for n in names if "host.db" in n]

        run(LocalRunner())
        held = open_files()
        assert held, "the idle engine keeps its SQLite file open between runs"
        close_engines()
        assert open_files() == [], open_files()
        assert not engine_cache().idle and not engine_cache().wal_holders
        result = run(LocalRunner())  # and qmcp opens it again when needed
        assert str(result.status) == "completed"
        close_engines()
        assert open_files() == []
        print("ok", len(held))
        """,
    )
    assert done.stdout.startswith("ok")
