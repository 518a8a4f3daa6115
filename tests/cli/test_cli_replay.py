"""`qmcp executions replay` and `export-fixture`: through the installed executable, record once on a
provider (here a scripted model only this test process knows), export, then run offline in a fresh
process with `--model recorded:run.json` and get the recorded output; in-process, their options."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner

TEAMS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "pipeline": ({}, ("plan", "write", "edit")),
    "ensemble": ({"aggregation_method": "synthesis"}, ("m1", "m2", "aggregator")),
    "debate": ({"max_rounds": 2, "consensus_method": "mediator"}, ("proponent", "opponent", "mediator")),
}


async def _record(db_file: Path, kind: str, model: str) -> Any:
    config, slots = TEAMS[kind]
    agents = {slot: AgentType(name=f"a-{slot}", role="generalist", config={"model": model}) for slot in slots}
    result = await LocalRunner(db_url=f"sqlite+aiosqlite:///{db_file}").run(
        Topology(name=f"t-{kind}", topology_type=kind, config=config), agents, {"prompt": "Cars in cities?"}
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    return result


@pytest.mark.parametrize("kind", list(TEAMS))
async def test_record_export_and_run_offline_through_the_cli(kind, run_qmcp, db_file, tmp_path, scripted):
    model, _ = scripted(replies=lambda prompt, index: f"point {index}: {uuid.uuid4().hex}")
    recorded = await _record(db_file, kind, model)
    exported = run_qmcp("executions", "export-fixture", str(recorded.execution_id)[:8])
    assert exported.returncode == 0, exported.stderr
    fixture = tmp_path / "run.json"
    fixture.write_text(exported.stdout)
    document = json.loads(exported.stdout)
    assert document["format"] == "qmcp-fixture/1" and document["output"] == recorded.output

    replayed = run_qmcp("executions", "replay", str(recorded.execution_id))
    assert (replayed.returncode, replayed.stdout.strip()) == (
        0,
        f"replayed {len(document['steps'])} steps: identical",
    )
    assert run_qmcp("executions", "replay", "run.json").stdout.strip() == replayed.stdout.strip()

    offline = run_qmcp(
        "--model", "recorded:run.json", "--format", "json", "agents", "topologies", "run", f"t-{kind}",
        "--input-json", '{"prompt": "Cars in cities?"}',
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["output"] == recorded.output


async def test_replay_exits_1_with_one_line_naming_the_changed_step(run_qmcp, db_file, tmp_path, scripted):
    model, _ = scripted()
    recorded = await _record(db_file, "pipeline", model)
    exported = run_qmcp("executions", "export-fixture", str(recorded.execution_id), "-o", "run.json")
    assert exported.returncode == 0 and exported.stderr.strip() == "wrote 3 steps to run.json"
    document = json.loads((tmp_path / "run.json").read_text())
    message = document["steps"][1]["request"]["messages"][0]
    message["content"] = message["content"].replace("Cars in cities?", "Bikes in cities?")
    (tmp_path / "edited.json").write_text(json.dumps(document))
    result = run_qmcp("executions", "replay", "edited.json")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(
        "error: step 'pipeline/1:write' (slot 'write') asks another prompt than the recording"
    )
    missing = run_qmcp("executions", "replay", "nowhere.json")
    assert missing.returncode == 2 and "recorded fixture 'nowhere.json' not found" in missing.stderr


def test_replay_prints_json_and_export_refuses_a_missing_directory(cli, db_file, tmp_path, scripted):
    import asyncio

    model, _ = scripted()
    recorded = asyncio.run(_record(db_file, "pipeline", model))
    assert cli.json("executions", "replay", str(recorded.execution_id)) == {
        "source": f"execution {recorded.execution_id}",
        "topology": "t-pipeline",
        "steps": 3,
        "output": recorded.output,
        "identical": True,
    }
    cli.user_error(
        "executions", "export-fixture", str(recorded.execution_id), "-o", str(tmp_path / "no" / "run.json"),
        says="--output: the directory of",
    )  # fmt: skip
    cli.user_error("executions", "export-fixture", "ffff", says="no execution id starts with 'ffff'")
    cli.ok("executions", "export-fixture", str(recorded.execution_id), "-o", str(tmp_path / "run.json"))
    assert (
        cli.ok("executions", "replay", str(tmp_path / "run.json")).stdout == "replayed 3 steps: identical\n"
    )
