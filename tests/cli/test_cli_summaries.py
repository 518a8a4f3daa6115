"""Run summaries say what matters per topology: the reasons, not only the verdict."""

from __future__ import annotations

from qmcp.app import summary_lines


def test_crosscheck_shows_counts_issues_and_abstentions():
    output = {
        "approved": False,
        "method": "majority",
        "primary_output": "42",
        "approvals": 1,
        "rejections": 1,
        "abstentions": 1,
        "checkers": 3,
        "validations": [
            {"checker": "checker_1", "approved": True, "issues": [], "parsed": True},
            {"checker": "checker_2", "approved": False, "issues": ["off by one", "no units"], "parsed": True},
            {"checker": "checker_3", "approved": False, "issues": ["unreadable"], "parsed": False},
        ],
    }
    lines = summary_lines(output)
    assert lines[0] == "approved: no · 1 of 3 checkers approved, 1 rejected, 1 abstained (majority)"
    assert "  checker_3 abstained: its reply could not be read as a verdict" in lines
    assert lines[-3:] == ["issues:", "  - off by one", "  - no units"]


def test_debate_flags_a_mediator_fallback():
    base = {"rounds": 2, "converged": True, "transcript": [], "winner": "draw", "confidence": 0.5}
    read = summary_lines(base | {"mediator": "judge", "mediator_fallback": False})
    assert read == [
        "debate: 2 rounds, converged · winner draw (confidence 0.50)",
        "  verdict by the mediator, judge",
    ]
    fallback = summary_lines(base | {"mediator": "judge", "mediator_fallback": True})
    assert "the mediator's (judge) reply could not be read" in fallback[1]
    assert summary_lines({"rounds": 1, "converged": False, "transcript": [], "winner": None})[1] == (
        "  no mediator: the verdict is the last round"
    )


def test_chain_lists_escalations_and_delegation_its_routing():
    chain = {
        "answer": "done",
        "commander": "boss",
        "escalations": 1,
        "subtasks": [
            {"task": "a", "assigned_to": "lieutenant_1", "confidence": 0.9, "escalated": False, "subtasks": [
                {"task": "a1", "assigned_to": "worker_1", "confidence": 0.2, "escalated": True},
            ]},
        ],
    }  # fmt: skip
    assert summary_lines(chain) == [
        "chain: 2 subtasks under boss, 1 escalated",
        "escalated:",
        "  - a1 (worker_1, confidence 0.20) → up a level",
    ]
    delegation = {
        "results": [{"task": "t", "assigned_to": "writer", "agent": "w", "reason": "role writer"}],
        "routing": {"writer": 1},
    }
    assert summary_lines(delegation) == [
        "delegation: 1 task routed (writer 1)",
        "routing:",
        "  - t → writer (w): role writer",
    ]


def test_a_crosscheck_run_prints_its_reasons(cli, scripted):
    checker, _ = scripted(
        replies=lambda prompt, i: '{"approved": false, "confidence": 0.9, "issues": ["wrong year"]}'
    )
    mumbler, _ = scripted(replies=lambda prompt, i: "no idea, sorry")
    cli.ok("agents", "create", "primary", "analyst", "--model", "test")
    cli.ok("agents", "create", "strict", "checker", "--model", checker)
    cli.ok("agents", "create", "mumbler", "checker", "--model", mumbler)
    cli.ok(
        "agents", "topologies", "create", "cc", "crosscheck",
        "-a", "primary=primary", "-a", "checker_1=strict", "-a", "checker_2=mumbler",
    )  # fmt: skip
    printed = cli.ok("-q", "agents", "topologies", "run", "cc", "--input-json", '{"prompt": "When?"}').stdout
    assert "approved: no · 0 of 2 checkers approved, 1 rejected, 1 abstained (majority)" in printed
    assert "checker_2 abstained" in printed and "  - wrong year" in printed


def test_compound_names_what_it_ran():
    sequential = {"mode": "sequential", "results": [{"topology": "a"}, {"topology": "b"}], "output": "x"}
    assert summary_lines(sequential) == ["compound (sequential): a → b"]
    parallel = {"mode": "parallel", "results": {"a": {}, "b": {}}, "output": "x"}
    assert summary_lines(parallel) == ["compound (parallel): a + b"]
    conditional = {"mode": "conditional", "results": [{"topology": "a"}], "chosen": None, "output": "x"}
    assert summary_lines(conditional) == [
        "compound (conditional): a · chosen: none (no condition matched, no default)"
    ]
