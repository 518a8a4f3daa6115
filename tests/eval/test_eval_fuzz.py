"""Whatever a dataset file or an answer holds, the outcome is samples, one-line errors or a score: never
another exception (a traceback is a bug)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmcp.eval import Dataset, DatasetError, Sample, ScoreError, parse_scorer

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_RECORD = st.dictionaries(st.sampled_from(["id", "input", "target", "metadata", "other"]), _JSON, max_size=5)
_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load(path: Path, skip_bad: bool) -> None:
    try:
        dataset = Dataset.load(path, skip_bad=skip_bad)
    except DatasetError as error:
        assert "\n" not in str(error) and str(error).startswith(path.name)
        return
    assert len(dataset) >= 1
    ids = [sample.id for sample in dataset]
    assert len(set(ids)) == len(ids)
    assert all(line.startswith(f"{path.name} ") and "\n" not in line for line in dataset.skipped)


@_SETTINGS
@given(lines=st.lists(_RECORD.map(json.dumps) | st.text(max_size=30), max_size=8), skip_bad=st.booleans())
def test_any_jsonl_file_loads_or_is_refused_in_one_line(tmp_path, lines, skip_bad):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines), encoding="utf-8")
    _load(path, skip_bad)


@_SETTINGS
@given(
    data=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".json", ".csv"]), skip_bad=st.booleans()
)
def test_any_bytes_load_or_are_refused_in_one_line(tmp_path, data, suffix, skip_bad):
    path = tmp_path / f"bytes{suffix}"
    path.write_bytes(data)
    _load(path, skip_bad)


@_SETTINGS
@given(
    rows=st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=4), max_size=6),
    header=st.lists(st.sampled_from(["input", "target", "id", "metadata", "x"]), min_size=1, max_size=4),
    skip_bad=st.booleans(),
)
def test_any_csv_table_loads_or_is_refused_in_one_line(tmp_path, rows, header, skip_bad):
    import csv

    path = tmp_path / "fuzz.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    _load(path, skip_bad)


@_SETTINGS
@given(
    answer=st.text(max_size=80),
    target=st.none()
    | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.text(max_size=5), min_size=1, max_size=3),
    spec=st.sampled_from(
        ["exact", "includes", r"regex:\d+", "number", "number:5%", "choice", "json:a[0]", "json:$"]
    ),
)
def test_any_answer_gets_a_score_or_a_one_line_reason(answer, target, spec):
    sample = Sample("s", {"prompt": "q"}, target, {})
    try:
        score = asyncio.run(parse_scorer(spec).score(sample, answer))
    except ScoreError as error:
        assert "\n" not in str(error)
        return
    assert 0 <= score.value <= 1 and "\n" not in score.explanation
