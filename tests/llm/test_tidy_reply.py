"""Small local models' text replies: no echoed prompt labels, no half sentence at the end."""

from __future__ import annotations

from qmcp.agentframework.llm._tidy import tidy_reply

PROMPT = (
    "Task: How can a small team make its web service more reliable?\n\n"
    "Output of the previous stage (critique):\nThe plan lacks tests.\n\n"
    "You are stage 3 of 3 (revise). Do your part of the work and reply with your result."
)


def test_echoed_labels_and_instructions_are_removed():
    reply = (
        "Task: Add tests and alerts.\n"
        "You are stage 3 of 3 (revise). Do your part of the work and reply with your result.\n"
        "Then review the alerts weekly.\n"
        "Output of the previous stage (critique):\n"
    )
    assert (
        tidy_reply(reply, PROMPT, truncated=False) == "Add tests and alerts.\nThen review the alerts weekly."
    )


def test_a_cut_reply_ends_at_its_last_sentence():
    reply = "Add tests. Page someone at night. Then we go further and"
    assert tidy_reply(reply, PROMPT, truncated=True) == "Add tests. Page someone at night."
    assert tidy_reply(reply, PROMPT, truncated=False) == reply  # only a reply the budget cut
    assert (
        tidy_reply("no sentence ends here at all", PROMPT, truncated=True) == "no sentence ends here at all"
    )


def test_labels_the_prompt_does_not_use_stay():
    reply = "Note: keep backups.\nPlan: two steps."
    assert tidy_reply(reply, PROMPT, truncated=False) == reply
    assert tidy_reply("Output:", PROMPT, truncated=False) == "Output:"  # never an empty answer
