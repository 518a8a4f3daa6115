"""The eval engine on SQLite and PostgreSQL: cells as executions, the report against a hand-checked
eval, failures, budgets, a judge, resume from stored outputs, and what a remote caller may not do."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete
from sqlmodel import col, select

from qmcp.agentframework.errors import InvalidConfigError, PermissionDeniedError, UserInputError
from qmcp.agentframework.models import EvalScore, Execution, ModelConfig, Models, Topology
from qmcp.agentframework.store import Database
from qmcp.app import Caller, Door
from qmcp.eval import (
    EvalRequest,
    add_scores,
    eval_report,
    eval_scores,
    get_eval,
    percentile,
    prepare_eval,
    resume_eval,
    start_eval,
)

OPERATOR = Caller.operator()
RIGHT_A = set(range(7))  # the samples model A answers right: 7 of 10
RIGHT_B = {0, 1, 2, 3, 4, 7, 8, 9}  # B: 8 of 10; only A: 5, 6; only B: 7, 8, 9


def _item(prompt: str) -> int:
    found = re.search(r"item (\d+)", prompt)
    assert found, prompt
    return int(found.group(1))


def _answers(right: set[int]) -> Callable[[str, int], str]:
    return lambda prompt, _index: f"answer {_item(prompt)}" if _item(prompt) in right else "no idea"


def _records(n: int = 10) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "input": f"solve item {i}", "target": f"answer {i}"} for i in range(n)]


def _priced(name: str, price: float = 1_000.0) -> None:
    provider, _, model = name.partition(":")
    Models.register(
        ModelConfig(provider=provider, name=model, input_price_per_mtok=price, output_price_per_mtok=price)
    )


async def _team(db: Database, agent: Callable[..., Any], name: str, model: str, stages: int = 1) -> None:
    agents = {f"s{i}": agent(f"{name}-agent{i}", "writer", model=model) for i in range(stages)}
    await db.save_team(Topology(name=name, topology_type="pipeline", config={}), agents)


async def _executions(db: Database, eval_id: str) -> list[Execution]:
    async with db.sessions() as session:
        return list((await session.exec(select(Execution).where(col(Execution.eval_id) == eval_id))).all())


async def test_the_report_matches_a_hand_checked_eval(db_url, scripted, agent):
    model_a, calls_a = scripted(replies=_answers(RIGHT_A))
    model_b, calls_b = scripted(replies=_answers(RIGHT_B))
    _priced(model_a, 1_000.0)
    _priced(model_b, 3_000.0)
    async with Database(db_url) as db:
        await _team(db, agent, "alpha", model_a)
        await _team(db, agent, "beta", model_b)
        request = EvalRequest(
            records=_records(), topologies=["alpha", "beta"], single_call=["alpha-agent0"], max_concurrent=3
        )
        outcome = await start_eval(db, request, OPERATOR)
        assert (outcome.status, outcome.cells, outcome.scored) == ("completed", 30, 30)
        report = await eval_report(db, outcome.eval_id, rows=True)
        executions = await _executions(db, outcome.eval_id)

    assert len(calls_a.calls) == 20 and len(calls_b.calls) == 10  # alpha and the single call on A, beta on B
    assert [v.variant for v in report.variants] == ["alpha", "beta", "single-call-alpha-agent0"]
    alpha, beta, single = report.variants
    assert (alpha.n, alpha.accuracy, alpha.failures) == (10, 0.7, 0)
    assert (beta.n, beta.accuracy) == (10, 0.8)
    assert single.accuracy == 0.7 and single.kind == "single-call" and single.agent == "alpha-agent0"
    # Wilson 95 % for 7 of 10, by hand: centre (0.7 + z²/20) / (1 + z²/10), z = 1.959964
    z = 1.959964
    centre = (0.7 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.7 * 0.3 / 10 + z * z / 400) / (1 + z * z / 10)
    assert alpha.interval_method == "wilson"
    assert alpha.interval == pytest.approx((centre - half, centre + half), abs=1e-4)
    assert alpha.interval == pytest.approx((0.3968, 0.8922), abs=1e-4)

    by_variant: dict[str, list[Execution]] = {}
    for execution in executions:
        by_variant.setdefault(execution.topology_name, []).append(execution)
    assert {name: len(rows) for name, rows in by_variant.items()} == {
        "alpha": 10,
        "beta": 10,
        "single-call-alpha-agent0": 10,
    }
    cost_alpha = sum(e.cost_usd for e in by_variant["alpha"])
    cost_beta = sum(e.cost_usd for e in by_variant["beta"])
    assert cost_alpha > 0 and alpha.total_cost_usd == pytest.approx(cost_alpha)
    assert alpha.total_tokens == sum(e.input_tokens + e.output_tokens for e in by_variant["alpha"])
    assert alpha.mean_tokens == pytest.approx(alpha.total_tokens / 10)
    assert alpha.accuracy_per_dollar == pytest.approx(0.7 / (cost_alpha / 10))
    durations = [float(e.duration_ms) for e in by_variant["alpha"]]
    assert alpha.latency_p50_ms == pytest.approx(percentile(durations, 50))
    assert alpha.latency_p95_ms == pytest.approx(percentile(durations, 95))

    pair = next(p for p in report.pairs if (p.a, p.b) == ("alpha", "beta"))
    assert (pair.n, pair.only_a, pair.only_b, pair.test) == (10, 2, 3, "mcnemar")
    assert pair.difference == pytest.approx(0.1)
    # 5 discordant pairs, 2 against 3: the exact two-sided binomial p is min(1, 2 × P(X ≤ 2)) = 1
    assert pair.p_value == pytest.approx(1.0)
    assert pair.cost_ratio == pytest.approx(cost_beta / cost_alpha)
    assert len(report.pairs) == 3

    rows = {(r.sample_id, r.variant): r for r in report.rows or []}
    assert len(rows) == 30
    assert rows[("q7", "alpha")].score == 0.0 and rows[("q7", "beta")].score == 1.0
    assert rows[("q7", "alpha")].answer == "no idea" and rows[("q7", "alpha")].target == "answer 7"
    assert rows[("q7", "beta")].answer == "answer 7" and rows[("q7", "beta")].explanation
    assert rows[("q0", "alpha")].execution_id in {str(e.id) for e in by_variant["alpha"]}
    assert all(r.status == "completed" and r.cost_usd and r.latency_ms is not None for r in rows.values())


async def test_a_failed_cell_is_recorded_as_a_failure_not_a_crash(db_url, scripted, agent):
    model, _ = scripted(replies=_answers(set(range(10))), failures={3: "auth"})
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        outcome = await start_eval(
            db, EvalRequest(records=_records(6), topologies=["solo"], max_concurrent=1), OPERATOR
        )
        report = await eval_report(db, outcome.eval_id, rows=True)
    assert outcome.status == "completed"
    (solo,) = report.variants
    assert (solo.n, solo.failures) == (6, 1) and solo.accuracy == pytest.approx(5 / 6)
    failed = [r for r in report.rows or [] if r.score is None]
    assert len(failed) == 1 and failed[0].status == "failed" and failed[0].explanation.startswith("failed:")


async def test_max_cost_stops_starting_cells_and_resume_with_more_finishes_paying_each_call_once(
    db_url, scripted, agent
):
    model, script = scripted(replies=_answers(set(range(20))))
    _priced(model, 10.0)  # about $0.0009 a cell
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        request = EvalRequest(records=_records(20), topologies=["solo"], max_cost_usd=0.001, max_concurrent=1)
        outcome = await start_eval(db, request, OPERATOR)
        assert outcome.status == "stopped (budget)" and 0 < outcome.scored < 20
        assert outcome.message and f"qmcp eval resume {outcome.eval_id} --max-cost USD" in outcome.message
        assert outcome.spend_usd >= 0.001
        report = await eval_report(db, outcome.eval_id)
        assert report.status == "stopped (budget)" and report.recorded == outcome.scored
        assert report.message and report.message.startswith("stopped: the eval spent $")
        paid = len(script.calls)
        assert paid == outcome.scored  # one call a cell, the budget checked before each start

        again = await resume_eval(db, outcome.eval_id, OPERATOR, max_cost_usd=1.0)
        assert (again.status, again.scored) == ("completed", 20)
        assert len(script.calls) == 20
        assert (await get_eval(db, outcome.eval_id)).spec["max_cost_usd"] == 1.0  # the next resume keeps it


async def test_budget_per_sample_sets_each_cells_budget(db_url, scripted, agent):
    model, _ = scripted(replies=_answers(set(range(3))))
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        tokens = await start_eval(
            db, EvalRequest(records=_records(3), topologies=["solo"], budget_per_sample="50000"), OPERATOR
        )
        dollars = await start_eval(
            db, EvalRequest(records=_records(3), topologies=["solo"], budget_per_sample="0.02usd"), OPERATOR
        )
        for execution in await _executions(db, tokens.eval_id):
            assert (execution.run_config["max_tokens"], execution.run_config["max_cost_usd"]) == (
                50_000,
                None,
            )
        for execution in await _executions(db, dollars.eval_id):
            assert (execution.run_config["max_tokens"], execution.run_config["max_cost_usd"]) == (None, 0.02)
        report = await eval_report(db, dollars.eval_id)
        assert report.max_cost_per_cell == 0.02
        with pytest.raises(InvalidConfigError, match="--budget-per-sample"):
            await prepare_eval(
                db, EvalRequest(records=_records(3), topologies=["solo"], budget_per_sample="lots"), OPERATOR
            )


async def test_a_judge_scorer_calls_are_executions_counted_apart_and_not_paid_again(db_url, scripted, agent):
    model, _ = scripted(replies=_answers({0, 1}))
    judge_model, judge = scripted(
        replies=lambda prompt, _i: (
            "VERDICT: " + ("CORRECT" if re.search(r"<answer>\s*answer", prompt) else "INCORRECT")
        )
    )
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        await db.save_agent(agent("referee", "judge", model=judge_model))
        outcome = await start_eval(
            db, EvalRequest(records=_records(4), topologies=["solo"], scorer="judge:referee"), OPERATOR
        )
        report = await eval_report(db, outcome.eval_id)
        assert report.judge.executions == 4 and len(judge.calls) == 4
        assert report.variants[0].accuracy == 0.5
        assert report.variants[0].total_tokens + report.judge.tokens == sum(
            e.input_tokens + e.output_tokens for e in await _executions(db, outcome.eval_id)
        )
        async with db.sessions() as session, session.begin():
            await (await session.connection()).execute(
                delete(EvalScore).where(col(EvalScore.eval_id) == outcome.eval_id)
            )
        again = await resume_eval(db, outcome.eval_id, OPERATOR)
        assert again.scored == 4 and len(judge.calls) == 4  # the judge's answers replay from their executions
        assert (await eval_report(db, outcome.eval_id)).variants[0].accuracy == 0.5


async def test_resume_scores_finished_cells_from_their_stored_output_without_a_call(db_url, scripted, agent):
    model, script = scripted(replies=_answers({0, 2, 4}))
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model, stages=2)
        outcome = await start_eval(db, EvalRequest(records=_records(5), topologies=["solo"]), OPERATOR)
        before = [(s.sample_id, s.score) for s in await eval_scores(db, outcome.eval_id)]
        async with db.sessions() as session, session.begin():
            await (await session.connection()).execute(
                delete(EvalScore).where(
                    col(EvalScore.eval_id) == outcome.eval_id, col(EvalScore.sample_id) != "q0"
                )
            )
        again = await resume_eval(db, outcome.eval_id, OPERATOR)
        after = [(s.sample_id, s.score) for s in await eval_scores(db, outcome.eval_id)]
    assert again.scored == 5 and len(script.calls) == 10
    assert sorted(after) == sorted(before)


async def test_a_resume_refuses_a_team_changed_since_the_eval_began(db_url, scripted, agent):
    model, _ = scripted(replies=_answers(set()))
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        run = await prepare_eval(db, EvalRequest(records=_records(2), topologies=["solo"]), OPERATOR)
        await _team(db, agent, "solo", model, stages=2)
        with pytest.raises(UserInputError, match="changed since eval"):
            await resume_eval(db, run.id, OPERATOR)


async def test_a_remote_caller_sends_records_and_names_no_python_scorer(db_url, scripted, agent, tmp_path):
    model, _ = scripted(replies=_answers(set()))
    remote = Caller.client(Door.HTTP)
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "x", "target": "y"}\n')
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        with pytest.raises(PermissionDeniedError, match="records"):
            await prepare_eval(db, EvalRequest(dataset=str(data), topologies=["solo"]), remote)
        with pytest.raises(PermissionDeniedError, match="python"):
            await prepare_eval(
                db, EvalRequest(records=_records(1), topologies=["solo"], scorer="python:os:getcwd"), remote
            )
        with pytest.raises(PermissionDeniedError, match="model_override"):
            await prepare_eval(db, EvalRequest(records=_records(1), topologies=["solo"], model=model), remote)
        run = await prepare_eval(db, EvalRequest(records=_records(1), topologies=["solo"]), remote)
        assert run.spec["origin"] == "server"
        assert run.spec["timeout_seconds"] == 3600  # the server's caps bound each cell
        outcome = await resume_eval(db, run.id, remote)
        (execution,) = await _executions(db, outcome.eval_id)
        assert execution.run_config["timeout_seconds"] == 3600 and execution.origin == "server"


async def test_user_mistakes_are_refused_before_anything_is_written(db_url, scripted, agent):
    model, _ = scripted(replies=_answers(set()))
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        await db.save_team(
            Topology(name="single-call-solo-agent0", topology_type="ensemble", config={}),
            {"m1": agent("solo-agent0", "writer", model=model)},
        )
        cases = [
            (EvalRequest(records=_records(1)), "at least one variant"),
            (EvalRequest(records=_records(1), topologies=["solo", "solo"]), "given twice"),
            (EvalRequest(records=_records(1), topologies=["nope"]), "not found"),
            (EvalRequest(records=_records(1), topologies=["solo"], scorer="bogus"), "unknown scorer"),
            (EvalRequest(records=_records(1), single_call=["solo-agent0"]), "is not qmcp eval's one call"),
            (
                EvalRequest(
                    records=[{"id": "a", "input": "x"}, {"id": "a", "input": "y"}], topologies=["solo"]
                ),
                "a",
            ),
        ]
        for request, says in cases:
            with pytest.raises(UserInputError, match=says):
                await prepare_eval(db, request, OPERATOR)
        await db.save_agent(agent("other", "writer", model=model))
        judged_by_nobody = EvalRequest(records=_records(1), single_call=["other"], scorer="judge:ghost")
        with pytest.raises(UserInputError, match="agent 'ghost' not found"):
            await prepare_eval(db, judged_by_nobody, OPERATOR)
        with pytest.raises(UserInputError, match="not found"):
            await db.get_topology("single-call-other")  # checked first: the baseline was not stored
        async with db.sessions() as session:
            assert not (await session.exec(select(EvalScore))).all()


async def test_scores_another_process_wrote_first_are_kept_and_the_others_added(db_url, scripted, agent):
    model, _ = scripted(replies=_answers(set()))
    async with Database(db_url) as db:
        await _team(db, agent, "solo", model)
        run = await prepare_eval(db, EvalRequest(records=_records(2), topologies=["solo"]), OPERATOR)

        def score(sample: str, value: float) -> EvalScore:
            return EvalScore(eval_id=run.id, sample_id=sample, variant="solo", score=value, explanation="x")

        await add_scores(db, [score("q0", 1.0)])
        await add_scores(db, [score("q0", 0.0), score("q1", 0.0)])
        assert [(s.sample_id, s.score) for s in await eval_scores(db, run.id)] == [("q0", 1.0), ("q1", 0.0)]


async def test_graded_scores_get_bootstrap_intervals_and_repeats_pair_sample_by_sample(
    db_url, scripted, agent
):
    model_a, _ = scripted(replies=_answers({0, 1, 2}))
    model_b, _ = scripted(replies=_answers({0}))
    judge_model, _ = scripted(
        replies=lambda prompt, _i: "SCORE: 1" if re.search(r"<answer>\s*answer", prompt) else "SCORE: 0.25"
    )
    async with Database(db_url) as db:
        await _team(db, agent, "alpha", model_a)
        await _team(db, agent, "beta", model_b)
        await db.save_agent(agent("grader", "judge", model=judge_model))
        request = EvalRequest(
            records=_records(4), topologies=["alpha", "beta"], scorer="judge:grader", repeat=2
        )
        outcome = await start_eval(db, request, OPERATOR)
        report = await eval_report(db, outcome.eval_id)
    alpha, beta = report.variants
    assert (alpha.n, beta.n) == (8, 8) and report.cells == 16 and report.judge.executions == 16
    assert alpha.accuracy == pytest.approx((3 * 1 + 0.25) / 4)  # the same answers in both repeats
    assert beta.accuracy == pytest.approx((1 + 3 * 0.25) / 4)
    assert alpha.interval_method == "bootstrap" and alpha.interval is not None
    assert alpha.interval[0] <= alpha.accuracy <= alpha.interval[1]
    (pair,) = report.pairs
    assert (pair.test, pair.p_value, pair.only_a, pair.n) == ("paired bootstrap", None, None, 8)
    assert pair.difference == pytest.approx(beta.accuracy - alpha.accuracy)
    assert pair.interval is not None and pair.interval[0] <= pair.difference <= pair.interval[1]
