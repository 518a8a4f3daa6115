"""Every scorer on fixed replies: the formats models really write, the failures, and the one-line errors."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from qmcp.agentframework.errors import InvalidConfigError, PermissionDeniedError
from qmcp.agentframework.llm import call_model, resolve_model
from qmcp.app import Caller, Door
from qmcp.eval import (
    SCORER_KINDS,
    Dataset,
    Sample,
    Score,
    ScoreError,
    check_scorable,
    check_scorer_allowed,
    extract_choice,
    extract_number,
    judge_agent,
    judge_prompt,
    normalize_answer,
    parse_scorer,
    parse_verdict,
)


def _sample(target: Any, input: Any = "What is it?", id: str = "s1") -> Sample:
    return Sample(id, input if isinstance(input, dict) else {"prompt": input}, target, {})


async def _score(spec: str, target: Any, answer: str) -> Score:
    return await parse_scorer(spec).score(_sample(target), answer)


async def _value(spec: str, target: Any, answer: str) -> float:
    return (await _score(spec, target, answer)).value


# -- exact ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "answer", "value"),
    [
        ("Paris", "Paris", 1),
        ("Paris", "  paris.  ", 1),
        ("Paris", "**Paris**", 1),
        ("Paris", '"PARIS!"', 1),
        ("New York", "new   york", 1),
        ("New York", "New\nYork", 1),
        ("Paris", "Paris, France", 0),
        ("Paris", "It is Paris.", 0),
        ("-5", "5", 0),  # a sign is not punctuation to strip
        (["Paris", "City of Light"], "city of light", 1),
        (["Paris", "City of Light"], "Lyon", 0),
        (42.0, "42", 1),
        (42.0, "42.0", 1),
        (42.0, "42.", 1),
        (1234.0, "1,234", 1),
        (42.0, "forty-two", 0),
        (0.5, "0.50", 1),
        ("ﬁne", "fine", 1),  # NFKC: the ligature is two letters
    ],
)
async def test_exact(target, answer, value):
    assert await _value("exact", target, answer) == value


async def test_exact_explains_in_one_line():
    assert (
        await _score("exact", "Paris", "Lyon\nand more")
    ).explanation == "expected 'Paris', got 'Lyon and more'"
    assert (await _score("exact", ["a", "b"], "c")).explanation == "expected one of 'a', 'b', got 'c'"
    assert (await _score("exact", 42.0, "42")).explanation == "equals 42"
    long = await _score("exact", "x", "y" * 500)
    assert len(long.explanation) < 100 and long.explanation.endswith("…'")


# -- includes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "answer", "value"),
    [
        ("Paris", "The capital is Paris.", 1),
        ("paris", "THE CAPITAL IS PARIS", 1),
        ("New York", "It's new\n york city", 1),
        ("Paris", "Lyon", 0),
        (["Rome", "Roma"], "Roma, Italia", 1),
        (42.0, "It is 42 apples", 1),
        ("", "anything", 1),
    ],
)
async def test_includes(target, answer, value):
    assert await _value("includes", target, answer) == value


# -- regex ---------------------------------------------------------------------------------------


async def test_regex_searches_the_answer_and_needs_no_target():
    assert await _value(r"regex:\b4[0-9]\b", None, "the answer: 42") == 1
    assert await _value(r"regex:^\d+$", None, "42 apples") == 0
    assert await _value("regex:(?i)^yes", None, "Yes, indeed") == 1
    assert (
        await _score("regex:a:b", None, "xa:by")
    ).explanation == "/a:b/ matched 'a:b'"  # colons in the pattern
    assert (await _score(r"regex:\d", None, "none")).explanation == r"/\d/ not found in 'none'"


def test_a_bad_pattern_is_refused_when_parsed():
    with pytest.raises(
        InvalidConfigError, match=r"^scorer 'regex:\(unclosed': not a valid regular expression"
    ):
        parse_scorer("regex:(unclosed")
    with pytest.raises(InvalidConfigError, match=r"over 1000 characters"):
        parse_scorer("regex:" + "a" * 1001)


# -- number --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "number"),
    [
        ("42", 42),
        ("The answer is 42.", 42),
        ("6 x 7 = 42", 42),
        ("#### 42", 42),
        ("-3.5 km", -3.5),
        ("It fell by −3 degrees", -3),  # the minus sign U+2212
        ("1,234.5", 1234.5),
        ("$1,000,000 in total", 1000000),
        ("a 5-3 win", 3),  # the hyphen between digits is no sign
        ("x = .5", 0.5),
        ("2e3 grams", 2000),
        ("First 10, then 20, finally **30**.", 30),
        ("It is 3.", 3),
        ("１２", 12),  # full-width digits, NFKC
        ("1,2,3", 3),  # a list without spaces: its last number
        ("1,2345", 2345),
        ("version 2.0 has 3 parts", 3),
        ("no number at all", None),
        ("", None),
    ],
)
def test_the_last_number_is_extracted(answer, number):
    assert extract_number(answer) == number


@pytest.mark.parametrize(
    ("spec", "target", "answer", "value"),
    [
        ("number", 42.0, "So the answer is 42", 1),
        ("number", 42.0, "42.0", 1),
        ("number", 42.0, "41.99", 0),
        ("number", 0.3, "0.1 + 0.2 = 0.3", 1),
        ("number", "42", "It's 42", 1),  # a text target that is a number
        ("number", "1,000", "1000", 1),
        ("number", "42 km", "42000 m is 42 km", 1),  # a text target holding one number
        ("number", ["42", "42.5"], "42.5", 1),
        ("number:0.01", 42.0, "42.009", 1),
        ("number:0.01", 42.0, "42.02", 0),
        ("number:1%", 200.0, "It is 198", 1),
        ("number:1%", 200.0, "It is 197.9", 0),
        ("number:0.5", -3.0, "-3.4", 1),
        ("number", 42.0, "I don't know", 0),
    ],
)
async def test_number(spec, target, answer, value):
    assert await _value(spec, target, answer) == value


async def test_number_explains_what_it_compared():
    assert (
        await _score("number:0.01", 42.0, "about 41.5")
    ).explanation == "expected 42, got 41.5 (tolerance 0.01)"
    assert (await _score("number:2%", 50.0, "50")).explanation == "expected 50, got 50 (tolerance 2%)"
    assert (await _score("number", [1.0, 2.0], "3")).explanation == "expected 1 or 2, got 3"
    assert (
        await _score("number", 7.0, "seven")
    ).explanation == "expected 7, the answer holds no number: 'seven'"


async def test_number_needs_a_numeric_target():
    with pytest.raises(
        ScoreError, match=r"^sample 's1': target 'Paris' is not a number; the 'number' scorer needs one$"
    ):
        await _score("number", "Paris", "42")
    with pytest.raises(
        ScoreError, match=r"^sample 's1' has no target; the 'number' scorer compares against one$"
    ):
        await _score("number", None, "42")


@pytest.mark.parametrize("spec", ["number:abc", "number:-1", "number:", "number:nan", "number:1%%"])
def test_a_bad_tolerance_is_refused(spec):
    with pytest.raises(
        InvalidConfigError,
        match=r"is not a number 0 or more; write number:0\.01 \(absolute\) or number:1% \(relative\)",
    ):
        parse_scorer(spec)


@pytest.mark.timeout(30)  # a hang guard, not a measurement: the first patterns took 34 s on 400 spaces
def test_the_extractors_stay_linear_on_hostile_answers():
    n = 100_000
    for answer in (
        "answer" + " " * n + "x",
        "answer" + "*" * n + "x",
        " " * n + "\n" + "*" * n,
        "answer: " * (n // 8),
        "1" + ",111" * n + "1",
        ",1" * n,
        "1." * n,
        "-" * n + "1",
        "(" * n,
    ):
        extract_choice(answer)
        extract_number(answer)
        normalize_answer(answer)
        parse_verdict(answer)
    for word in ("verdict", "score"):
        parse_verdict(word + " " * n + "x")
        parse_verdict(word + ": " + "*" * n + "x")


# -- choice --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("C", "C"),
        ("c", "C"),
        ("(C)", "C"),
        ("c)", "C"),
        ("C.", "C"),
        ("[D]", "D"),
        ("Answer: (C)", "C"),
        ("answer: c", "C"),
        ("The answer is C.", "C"),
        ("The correct answer is: B", "B"),
        ("The answer is option E", "E"),
        ("I'd pick choice (a).", "A"),
        ("Final answer: **D**", "D"),
        ("So:\n**(B)**", "B"),
        ("Options: (A) 1 (B) 2 (C) 3\nAnswer: B", "B"),  # the stated answer, not the listed options
        ("Let me think.\nA is wrong, B is too.\n\nC", "C"),  # a line holding only the letter
        ("B) Because the sum is even.", "B"),
        ("A. 12 apples", "A"),
        ("I believe (B) fits best", "B"),
        ("the answer is a prime number", None),  # "a" the article is no choice
        ("A is wrong and so is B", None),
        ("The answer is clearly wrong", None),
        ("F", None),
        ("", None),
    ],
)
def test_the_chosen_letter_is_extracted(answer, letter):
    assert extract_choice(answer) == letter


async def test_choice():
    assert await _value("choice", "C", "Answer: (C)") == 1
    assert await _value("choice", "(c)", "The answer is C.") == 1
    assert await _value("choice", ["A", "B"], "b)") == 1
    assert (await _score("choice", "C", "The answer is B.")).explanation == "expected C, got B"
    assert (
        await _score("choice", "C", "no idea")
    ).explanation == "expected C, found no choice letter (A-E) in 'no idea'"
    with pytest.raises(ScoreError, match=r"target 'Paris' is not a choice letter A-E"):
        await _score("choice", "Paris", "A")


# -- json:PATH -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "target", "answer", "value"),
    [
        ("json:name", "Ada", '{"name": "Ada"}', 1),
        ("json:name", "Ada", 'Sure! Here it is: {"name": "Ada", "age": 36} Hope that helps.', 1),
        ("json:name", "Ada", 'Here:\n```json\n{"name": "Ada"}\n```\n', 1),
        ("json:name", "Ada", '{"name": "Bob"}', 0),
        ("json:person.age", 36.0, '{"person": {"age": 36}}', 1),
        ("json:person.age", "36", '{"person": {"age": 36.0}}', 1),  # text that is JSON is compared as JSON
        ("json:person.age", "36", '{"person": {"age": "36"}}', 0),  # a string is not a number
        ("json:items[1]", "b", '{"items": ["a", "b"]}', 1),
        ("json:items[-1].id", 3.0, '{"items": [{"id": 1}, {"id": 3}]}', 1),
        ("json:$[0]", "x", '["x", "y"]', 1),
        ("json:$.ok", "true", '{"ok": true}', 1),
        ("json:ok", "true", '{"ok": 1}', 0),  # a number is not a boolean
        ("json:ok", "null", '{"ok": null}', 1),
        ("json:$", '{"a": [1, 2]}', 'Result: {"a": [1, 2.0]}', 1),
        ("json:a", ["1", "2"], '{"a": 2}', 1),
        ("json:a", "x", '{broken json} and then {"a": "x"}', 1),  # the first object that parses
    ],
)
async def test_json_path(spec, target, answer, value):
    assert await _value(spec, target, answer) == value


async def test_json_path_explains_where_it_stopped():
    assert (
        await _score("json:a.b", "x", "no json here")
    ).explanation == "expected \"x\" at a.b, found no JSON in 'no json here'"
    assert (
        await _score("json:a.b", "x", '{"a": {"c": 1}}')
    ).explanation == "expected \"x\" at a.b, but a has no key 'b'"
    assert (
        await _score("json:a[5]", "x", '{"a": [1]}')
    ).explanation == 'expected "x" at a[5], but a has 1 items'
    assert (
        await _score("json:a.b", "x", '{"a": 3}')
    ).explanation == 'expected "x" at a.b, but a is not an object'
    assert (await _score("json:a", 2.0, '{"a": 1}')).explanation == "expected 2 at a, got 1"


@pytest.mark.parametrize("spec", ["json:a..b", "json:a[x]", "json:a[1", "json:a]"])
def test_a_bad_path_is_refused(spec):
    with pytest.raises(InvalidConfigError, match=r"cannot read the path at .*; write names with dots"):
        parse_scorer(spec)


# -- parsing specs -------------------------------------------------------------------------------


def test_every_listed_kind_parses_and_keeps_its_spec(tmp_path, monkeypatch):
    _scorer_module(tmp_path, monkeypatch, "def grade(sample, answer):\n    return True\n")
    for spec in (
        "exact",
        "includes",
        r"regex:\d",
        "number",
        "number:0.1",
        "choice",
        "json:a",
        "judge:grader",
        "python:my_scorers:grade",
    ):
        assert parse_scorer(spec).spec == spec
    assert {k.split(":")[0].split("[")[0] for k in SCORER_KINDS} == {
        "exact",
        "includes",
        "regex",
        "number",
        "choice",
        "json",
        "judge",
        "python",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "exakt",
            r"^unknown scorer 'exakt'; did you mean 'exact'\? choose one of: exact, includes, regex:PAT",
        ),
        ("bleu", r"^unknown scorer 'bleu'; choose one of:"),
        ("exact:x", r"'exact' takes no argument; write just 'exact'"),
        ("regex:", r"'regex' needs an argument; write 'regex:PAT'"),
        ("json:", r"'json' needs an argument; write 'json:PATH'"),
        ("judge: ", r"'judge' needs an argument; write 'judge:AGENT'"),
        ("judge:two words", r"^scorer 'judge:two words': invalid agent name 'two words': use 1-64 lowercase"),
        ("judge:Grader", r"invalid agent name 'Grader'"),
        ("python:nomodule", r"write python:package\.module:function"),
        (
            "python:qmcp_no_such_module_x:f",
            r"cannot import 'qmcp_no_such_module_x' \(No module named .*\); put its directory on PYTHONPATH",
        ),
        ("python:json:no_such_function", r"module 'json' has no 'no_such_function'"),
        ("python:json:__doc__", r"'json:__doc__' is not a function"),
        ("python:json:loads", None),  # loads(s, *, ...) takes one positional argument only: refused below
    ],
)
def test_bad_specs_are_refused_in_one_line(spec, message):
    if message is None:
        with pytest.raises(InvalidConfigError, match=r"must take \(sample, answer\)"):
            parse_scorer(spec)
        return
    with pytest.raises(InvalidConfigError, match=message):
        parse_scorer(spec)


# -- judge:AGENT ---------------------------------------------------------------------------------


def _judge_over(model_string: str):
    """A judge as the engine's is: ask the agent's model with the rubric and return its reply."""
    asked: list[tuple[str, str]] = []

    async def judge(agent: str, prompt: str) -> str:
        asked.append((agent, prompt))
        reply = await call_model(
            resolve_model(model_string),
            model_string,
            system="You grade answers.",
            messages=[{"role": "user", "content": prompt}],
            settings={},
        )
        return reply.text

    return judge, asked


async def test_a_judge_agent_grades_with_a_rubric(scripted):
    def grade(prompt: str, _index: int) -> str:
        correct = "<answer>\nParis\n</answer>" in prompt and "<reference>\nParis\n</reference>" in prompt
        return "VERDICT: CORRECT\nIt names the capital." if correct else "VERDICT: INCORRECT - wrong city."

    model_string, model = scripted(replies=grade)
    judge, asked = _judge_over(model_string)
    scorer = parse_scorer("judge:grader")
    sample = _sample("Paris", "What is the capital of France?")
    right = await scorer.score(sample, "Paris", judge)
    wrong = await scorer.score(sample, "Lyon", judge)
    assert (right.value, wrong.value) == (1.0, 0.0)
    assert right.explanation == "judge grader: VERDICT: CORRECT It names the capital."
    assert wrong.explanation == "judge grader: VERDICT: INCORRECT - wrong city."
    assert [agent for agent, _ in asked] == ["grader", "grader"] and len(model.calls) == 2
    assert "What is the capital of France?" in model.calls[0].prompt


async def test_a_judge_on_the_test_model_gives_no_verdict_and_says_so():
    judge, _ = _judge_over("test")
    with pytest.raises(ScoreError, match=r"^judge 'grader' gave no verdict: '"):
        await parse_scorer("judge:grader").score(_sample("Paris"), "Paris", judge)


async def test_a_judge_scorer_without_a_judge_is_one_line():
    with pytest.raises(
        ScoreError,
        match=r"^scorer 'judge:grader' asks agent 'grader' to judge, but no judge was given; run it through qmcp eval",
    ):
        await parse_scorer("judge:grader").score(_sample("Paris"), "Paris")


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("VERDICT: CORRECT", 1.0),
        ("verdict: incorrect, because ...", 0.0),
        ("Verdict: **Correct**", 1.0),
        ("VERDICT: PARTIAL", 0.5),
        ("The answer looks right.\nVERDICT: INCORRECT", 0.0),
        ("SCORE: 0.7 - mostly right", 0.7),
        ("Score: 8/10", 0.8),
        ("score = 3 out of 4", 0.75),
        ("Correct. The answer matches.", 1.0),
        ("Incorrect: it says Lyon.", 0.0),
        ("Yes, it is right.", 1.0),
        ("No.", 0.0),
        ("SCORE: 7", None),  # not on the 0..1 scale asked for
        ("I cannot tell.", None),
    ],
)
def test_the_judges_verdict_is_parsed(reply, value):
    assert parse_verdict(reply) == value


def test_the_rubric_holds_the_task_the_references_and_the_answer():
    prompt = judge_prompt(_sample(["Paris", "paris"], "Capital of France?"), "Paris!")
    assert "<task>\nCapital of France?\n</task>" in prompt
    assert "<acceptable_answers>\nParis\nparis\n</acceptable_answers>" in prompt
    assert "<answer>\nParis!\n</answer>" in prompt
    assert '"VERDICT: CORRECT" or "VERDICT: INCORRECT"' in prompt
    structured = judge_prompt(_sample(None, {"question": "q", "context": "c"}), "a")
    assert '"question": "q"' in structured and "reference" not in structured
    assert "against" not in structured.splitlines()[0]
    assert "<reference>\n42\n</reference>" in judge_prompt(_sample(42.0), "42")


# -- python:module:func --------------------------------------------------------------------------


def _scorer_module(tmp_path, monkeypatch, source: str, name: str = "my_scorers") -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, name, raising=False)


async def test_python_scorers_return_scores_numbers_or_bools_sync_or_async(tmp_path, monkeypatch):
    _scorer_module(
        tmp_path,
        monkeypatch,
        """
        from qmcp.eval import Score

        def as_bool(sample, answer):
            return answer.strip() == sample.target

        def as_number(sample, answer):
            return 0.25

        async def as_score(sample, answer):
            return Score(0.5, f"half marks for {answer!r}")

        def too_big(sample, answer):
            return 3

        def wrong_type(sample, answer):
            return "yes"

        def broken(sample, answer):
            raise KeyError("missing")

        class Graders:
            @staticmethod
            def nested(sample, answer):
                return False
        """,
    )
    sample = _sample("ok")
    assert await parse_scorer("python:my_scorers:as_bool").score(sample, " ok ") == Score(
        1.0, "my_scorers:as_bool returned True"
    )
    assert await parse_scorer("python:my_scorers:as_number").score(sample, "x") == Score(
        0.25, "my_scorers:as_number returned 0.25"
    )
    assert await parse_scorer("python:my_scorers:as_score").score(sample, "x") == Score(
        0.5, "half marks for 'x'"
    )
    assert (await parse_scorer("python:my_scorers:Graders.nested").score(sample, "x")).value == 0.0
    with pytest.raises(
        ScoreError,
        match=r"^scorer my_scorers:too_big returned '3' for sample 's1'; return a Score, a number from 0 to 1, or a bool$",
    ):
        await parse_scorer("python:my_scorers:too_big").score(sample, "x")
    with pytest.raises(ScoreError, match=r"returned \"'yes'\""):
        await parse_scorer("python:my_scorers:wrong_type").score(sample, "x")
    with pytest.raises(
        ScoreError, match=r"^scorer my_scorers:broken failed on sample 's1': KeyError: 'missing'$"
    ):
        await parse_scorer("python:my_scorers:broken").score(sample, "x")


def test_only_the_operator_may_name_a_python_or_regex_scorer():
    for door in (Door.PYTHON, Door.CLI):
        check_scorer_allowed("python:my_scorers:grade", Caller.operator(door))
    for door in (Door.HTTP, Door.CONSOLE, Door.MCP):
        for authenticated in (False, True):
            caller = Caller.client(door, authenticated=authenticated)
            with pytest.raises(
                PermissionDeniedError,
                match=r"^scorer 'python:m:f' runs Python code on the server's machine, which only its operator decides; choose another scorer",
            ):
                check_scorer_allowed(" python:m:f", caller)
            with pytest.raises(PermissionDeniedError):
                check_scorer_allowed("PYTHON:m:f", caller)
            with pytest.raises(
                PermissionDeniedError,
                match=r"^scorer 'regex:\(a\+\)\+\$' runs a pattern with no time limit in the server's process",
            ):
                check_scorer_allowed("regex:(a+)+$", caller)
            for spec in ("exact", "includes", "number", "number:1%", "choice", "judge:grader", "json:a"):
                check_scorer_allowed(spec, caller)
    check_scorer_allowed("regex:(a+)+$", Caller.operator(Door.CLI))  # the operator's own risk


def test_refusing_a_remote_python_scorer_imports_nothing(tmp_path, monkeypatch):
    _scorer_module(tmp_path, monkeypatch, "raise SystemExit('imported')\n", name="never_imported")
    with pytest.raises(PermissionDeniedError):
        check_scorer_allowed("python:never_imported:f", Caller.client(Door.HTTP))
    assert "never_imported" not in __import__("sys").modules


# -- scores --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), True, "1"])
def test_a_score_is_a_number_from_0_to_1(value):
    with pytest.raises(ValueError, match="a score is a number from 0 to 1"):
        Score(value, "x")


def test_a_scores_explanation_is_one_bounded_line():
    score = Score(1, "first\nsecond   third" + "x" * 1000)
    assert score.value == 1.0 and isinstance(score.value, float)
    assert score.explanation.startswith("first second third") and len(score.explanation) == 300


def test_normalisation():
    assert normalize_answer("  The  Answer:\n PARIS! ") == "the answer: paris"
    assert normalize_answer("«Paris»") == "paris"
    assert normalize_answer("$5%") == "$5%"


# -- before an eval spends anything ---------------------------------------------------------------


def test_samples_a_scorer_cannot_score_are_found_before_any_answer():
    dataset = Dataset.from_records(
        [
            {"id": "a", "input": "q", "target": 4},
            {"id": "b", "input": "q", "target": "Paris"},
            {"id": "c", "input": "q"},
            {"id": "d", "input": "q", "target": "C"},
        ]
    )
    with pytest.raises(ScoreError) as caught:
        check_scorable(parse_scorer("number"), dataset)
    assert str(caught.value) == (
        "3 of 4 samples cannot be scored by 'number', the first: sample 'b': target 'Paris' is not a number; "
        "the 'number' scorer needs one; fix the targets or choose another scorer"
    )
    with pytest.raises(
        ScoreError, match=r"^3 of 4 samples cannot be scored by 'choice', the first: sample 'a'"
    ):
        check_scorable(parse_scorer("choice"), dataset)
    with pytest.raises(
        ScoreError, match=r"^a sample cannot be scored by 'exact', the first: sample 'c' has no target"
    ):
        check_scorable(parse_scorer("exact"), dataset)
    for spec in (r"regex:\d", "judge:grader"):  # no target needed
        check_scorable(parse_scorer(spec), dataset)
    check_scorable(parse_scorer("number"), dataset.head(1))


def test_the_judge_agent_of_a_scorer():
    assert judge_agent(parse_scorer("judge: grader")) == "grader"
    assert judge_agent(parse_scorer("exact")) is None
