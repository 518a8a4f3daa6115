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


DEMO_REVISE_PROMPT = (
    "Task: How can a small team make its web service more reliable?\n\n"
    "Output of the previous stage (critique):\n"
    "To improve reliability, we need to ensure that our services meet high standards in terms of security "
    "breaches prevention by using advanced encryption methods such as SSL/TLS or other protocols like TLS509 "
    "for data protection purposes only (https). This is a critical step towards building trust with users and "
    "ensuring the integrity of online transactions.\n\n"
    "You are stage 3 of 3 (revise). Do your part of the work and reply with your result."
)
DEMO_REVISE_REPLY = (  # SmolLM2-135M's 79 tokens at temperature 0, seed 0 (issue 27)
    "To improve reliability, we need to ensure that our services meet high standards in terms of security "
    "breaches prevention by using advanced encryption methods such as SSL/TLS or other protocols like TLS509 "
    "for data protection purposes only (https). This is a critical step towards building trust with users and "
    "ensuring the integrity of online transactions.\n"
    "Your task: How can we make web service more reliable?"
)


def test_a_reply_that_copies_its_input_and_restates_the_task_is_not_the_task():
    tidy = tidy_reply(DEMO_REVISE_REPLY, DEMO_REVISE_PROMPT, truncated=False)
    assert "Your task" not in tidy and "How can" not in tidy
    assert tidy == DEMO_REVISE_REPLY.splitlines()[0]  # the model repeated the critique: that is what it said


def test_a_restated_task_goes_and_what_the_reply_adds_stays():
    reply = (
        "Your task: How can we make web service more reliable?\nAdd health checks and roll back bad deploys."
    )
    assert (
        tidy_reply(reply, DEMO_REVISE_PROMPT, truncated=False)
        == "Add health checks and roll back bad deploys."
    )


def test_a_reply_that_only_asks_the_question_again_is_no_answer():
    assert tidy_reply("How can a team make the web service more reliable?", PROMPT, truncated=False) == ""


def test_an_answer_in_the_words_of_its_material_stays():
    prompt = "Task: Combine the answers.\n\nAnswer 1: Add tests for every release.\nAnswer 2: Page someone at night."
    reply = "Add tests for every release and page someone at night."
    assert tidy_reply(reply, prompt, truncated=False) == reply


def test_a_cut_reply_ends_at_its_first_sentence_rather_than_mid_sentence():
    reply = (  # SmolLM2-135M on the demo's question, cut at 48 tokens
        'The answer to this question would be "Paris" (X=2). The confidence level for Paris in French language '
        "refers to its geographical location as well - it's the capital of France but also a major international "
        "city with numerous cultural attractions like"
    )
    prompt = "What is the capital of France?"
    assert tidy_reply(reply, prompt, truncated=True) == 'The answer to this question would be "Paris" (X=2).'
