"""The helpers for hand-written flows read the shapes users pass, and refuse the others in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qmcp.agentframework.errors import InvalidConfigError, MalformedOutputError
from qmcp.agentframework.models import CrossCheckConfig, Topology, TopologyType
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.runners import metaflow_helpers as helpers
from qmcp.agentframework.topologies import aggregate_results, determine_consensus


def test_answers_are_read_from_chat_messages_pairs_and_invoke_agent_results():
    chat = aggregate_results([("a", {"role": "assistant", "content": "Paris"}), ("b", {"content": "paris"})])
    assert (chat["answer"], chat["votes"], [m["agent"] for m in chat["members"]]) == ("Paris", 2, ["a", "b"])
    parts = aggregate_results(
        [("a", {"content": [{"type": "text", "text": "Lis"}, {"type": "text", "text": "bon"}]})]
    )
    assert parts["answer"] == "Lisbon"
    results = [
        {"agent": "r1", "output": "42\nConfidence: 0.9", "error": None},
        {"agent": "r2", "output": "40"},
    ]
    average = aggregate_results(results, "average")
    assert (average["answer"], [m["agent"] for m in average["members"]]) == (41.0, ["r1", "r2"])
    assert aggregate_results([("a", 3), ("b", {"answer": 5, "confidence": 0.2})], "best_of")["answer"] == "3"


@pytest.mark.parametrize(
    ("results", "says"),
    [
        (
            [("a", {"role": "assistant", "reply": "Paris"})],
            "the answer of 'a' has no answer to read: a dict needs a text",
        ),
        (
            [("a", {"agent": "a", "output": None, "error": "timed out"})],
            "the answer of 'a' failed (timed out)",
        ),
        ([("a", object())], "the answer of 'a' is a object; pass text, a number, or a dict"),
        ([("a", None)], "the answer of 'a' is a NoneType"),
        ([3.5], "member 1 is a float; pass (name, answer) pairs"),
        ({"a": "Paris"}, "takes a list of member answers, not a dict"),
        ([], "no member answers to aggregate"),
    ],
)
def test_unreadable_answers_are_one_clear_error_never_a_repr(results, says):
    with pytest.raises(MalformedOutputError) as refused:
        aggregate_results(results)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    assert "object at 0x" not in str(refused.value)


def test_synthesis_calls_the_aggregator_it_is_given_or_says_how():
    with pytest.raises(
        InvalidConfigError, match=r"'synthesis' needs the aggregator agent's answer: pass aggregator="
    ):
        aggregate_results([("a", "Porto"), ("b", "Lisbon")], "synthesis")
    prompts: list[str] = []

    def aggregator(prompt: str) -> dict[str, str]:
        prompts.append(prompt)
        return {"agent": "editor", "output": "Porto or Lisbon"}

    out = aggregate_results(
        [("a", "Porto"), ("b", "Lisbon")], "synthesis", aggregator=aggregator, task="Where to?"
    )
    assert out["answer"] == "Porto or Lisbon" and out["method"] == "synthesis"
    assert prompts[0].startswith("Task: Where to?") and "Answer 2 (b):\nLisbon" in prompts[0]


def test_consensus_reads_checker_pairs_and_invoke_agent_results():
    pairs = [("c1", {"approved": True, "confidence": 0.9}), ("c2", {"approved": False, "issues": ["late"]})]
    decided = determine_consensus({"content": "the answer"}, pairs, "majority")
    assert (decided["approved"], decided["primary_output"], decided["issues"]) == (
        False,
        "the answer",
        ["late"],
    )
    assert [v["checker"] for v in decided["validations"]] == ["c1", "c2"]
    results = [
        {"agent": "c1", "output": "{...}", "data": {"approved": True, "confidence": 0.8}, "error": None},
        {"agent": "c2", "output": None, "data": None, "error": "model unavailable"},
    ]
    decided = determine_consensus({"agent": "p", "output": "42"}, results, "unanimous")
    assert (decided["approved"], decided["approvals"], decided["abstentions"]) == (False, 1, 1)
    assert decided["issues"] == ["checker failed: model unavailable"]
    assert determine_consensus("42", [("c1", {"approved": True})], "weighted")["approved"] is True


@pytest.mark.parametrize(
    ("validations", "says"),
    [
        ([("c1", {"verdict": "fine"})], "the verdict of 'c1' has no true/false 'approved' (keys: verdict)"),
        ([("c1", {"approved": "yes"})], "the verdict of 'c1' has no true/false 'approved'"),
        ([("c1", {"role": "assistant"})], "the verdict of 'c1' has no true/false 'approved' (keys: role)"),
        ([("c1", 0.9)], "the verdict of 'c1' has no true/false 'approved' (float)"),
        ({"approved": True}, "takes a list of verdicts, not a dict"),
    ],
)
def test_unreadable_verdicts_are_one_clear_error(validations, says):
    with pytest.raises(MalformedOutputError) as refused:
        determine_consensus({"output": "x"}, validations)
    assert says in str(refused.value) and "\n" not in str(refused.value)


CHECKER_REPLIES = [
    '{"approved": true, "confidence": 0.9}',
    'Checked.\n```json\n{"approved": false, "confidence": 0.6, "issues": ["no units"]}\n```',
    "LGTM!",
]


def test_consensus_reads_verdicts_from_reply_text():
    """Reply text (a chat message, a string, an `invoke_agent` result of a checker not asked for JSON) is
    read by the crosscheck's own parser: prose around the JSON is fine, a reply without one abstains."""
    replies = [
        ("c1", {"content": CHECKER_REPLIES[0]}),
        {"agent": "c2", "output": CHECKER_REPLIES[1], "data": None, "error": None},
        CHECKER_REPLIES[2],
    ]
    decided = determine_consensus({"content": "42"}, replies, "majority")
    assert [(v["checker"], v["approved"], v["parsed"]) for v in decided["validations"]] == [
        ("c1", True, True),
        ("c2", False, True),
        ("checker 3", False, False),
    ]
    assert (decided["approvals"], decided["rejections"], decided["abstentions"]) == (1, 1, 1)
    assert decided["approved"] is False and "no units" in decided["issues"]
    both = [
        ("c1", {"content": CHECKER_REPLIES[0]}),
        ("c2", {"content": '{"approved": true, "confidence": 0.9}'}),
    ]
    assert determine_consensus("42", both, "majority")["approved"] is True


async def test_consensus_on_reply_text_decides_as_the_crosscheck_topology(sqlite_url, agent, scripted):
    """One parser: the same checker replies give the same verdicts in the topology and in the helper."""
    primary, _ = scripted(replies=["42"])
    checkers = {
        f"checker_{i}": agent(f"c{i}", "checker", model=scripted(replies=[reply, reply])[0])
        for i, reply in enumerate(CHECKER_REPLIES, start=1)
    }
    config = CrossCheckConfig(num_checkers=3, consensus_method="weighted")
    topology = Topology(name="cc_text", topology_type=TopologyType.CROSSCHECK, config=config.model_dump())
    result = await LocalRunner(db_url=sqlite_url).run(
        topology, {"primary": agent("p", model=primary)} | checkers, {"prompt": "6*7?"}
    )
    assert result.output is not None
    helper = determine_consensus("42", list(zip(checkers, CHECKER_REPLIES, strict=True)), "weighted")
    assert {k: v for k, v in result.output.items() if k != "primary_agent"} == helper


def test_a_hand_written_flow_aggregates_invoke_agent_results(agent):
    """What a user's own flow does: one-off agent calls on the offline model, then the helpers."""
    members = [agent(f"m{i}").definition() for i in range(3)]
    results = [helpers.invoke_agent(member, {"prompt": "Capital of France?"}) for member in members]
    voted = helpers.aggregate_results(results, "vote")
    assert [m["agent"] for m in voted["members"]] == ["m0", "m1", "m2"]
    assert voted["answer"] and all(
        r["output"].startswith(voted["answer"]) for r in results
    )  # Confidence line out
    editor = agent("editor", "synthesizer").definition()
    synthesized = helpers.aggregate_results(
        results,
        "synthesis",
        aggregator=lambda prompt: helpers.invoke_agent(editor, {"prompt": prompt}),
        task="Capital of France?",
    )
    assert isinstance(synthesized["answer"], str) and synthesized["answer"]


def test_the_hand_written_flow_example_in_the_docs_runs(capsys):
    doc = (Path(__file__).parents[2] / "docs" / "metaflow.md").read_text()
    section = doc.split("## Helpers for hand-written flows", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None
    exec(compile(example.group(1), "docs/metaflow.md", "exec"), {"__name__": "docs_metaflow_example"})
    voted, written, approved = capsys.readouterr().out.rstrip("\n").rsplit("\n", 2)[-3:]
    assert voted and written and approved == "False"
