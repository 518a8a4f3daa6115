"""Datasets: JSONL, JSON and CSV samples, column mappings, bad samples told by line, and the bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmcp.agentframework.errors import UserInputError
from qmcp.eval import MAX_SAMPLE_BYTES, Dataset, DatasetError, Sample


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_jsonl_samples_take_text_or_objects_targets_of_every_kind_and_metadata(tmp_path):
    path = _write(
        tmp_path,
        "data.jsonl",
        _jsonl(
            {"input": "What is 6 x 7?", "target": 42},
            {"id": "capital", "input": {"country": "France"}, "target": ["Paris", "paris, france"]},
            "",  # a blank line is no sample, and does not shift the line numbers
            {"input": "Say hi", "target": "hi", "metadata": {"level": 1}, "source": "web"},
            {"id": 7, "input": "No target here"},
        ),
    )
    dataset = Dataset.load(path)
    assert len(dataset) == 4 and dataset.skipped == [] and dataset.source == "data.jsonl"
    assert list(dataset) == [
        Sample("line-1", {"prompt": "What is 6 x 7?"}, 42.0, {}),
        Sample("capital", {"country": "France"}, ["Paris", "paris, france"], {}),
        Sample("line-4", {"prompt": "Say hi"}, "hi", {"source": "web", "level": 1}),
        Sample("7", {"prompt": "No target here"}, None, {}),
    ]
    assert isinstance(dataset.samples[0].target, float)


def test_a_list_target_may_mix_text_and_numbers(tmp_path):
    path = _write(tmp_path, "d.jsonl", _jsonl({"input": "q", "target": ["0.5", 0.5, 2]}))
    assert Dataset.load(path).samples[0].target == ["0.5", "0.5", "2"]


def test_a_column_mapping_reads_other_names(tmp_path):
    path = _write(
        tmp_path,
        "qa.jsonl",
        _jsonl({"qid": "q1", "question": "2+2?", "answer": 4, "input": "kept as metadata"}),
    )
    dataset = Dataset.load(path, columns={"input": "question", "target": "answer", "id": "qid"})
    assert dataset.samples == [Sample("q1", {"prompt": "2+2?"}, 4.0, {"input": "kept as metadata"})]


def test_a_mapping_of_an_unknown_column_is_refused():
    with pytest.raises(
        UserInputError, match=r"'question' is not a dataset column; map one of: input, target"
    ):
        Dataset.from_records([{"input": "x"}], columns={"question": "q"})


def test_csv_cells_hold_text_json_objects_json_lists_and_numbers(tmp_path):
    text = (
        "id,input,target,metadata,topic\n"
        "a,What is 2+2?,4,,math\n"
        'b,"{""country"": ""Peru""}","[""Lima"", ""lima""]","{""hard"": true}",geo\n'
        'c,"Spell it, please",007,,words\n'
        ",Last one,-1.5e2,,\n"
        "\n"  # an empty row is no sample
        'e,"A question over\ntwo lines",yes,,\n'
    )
    dataset = Dataset.load(_write(tmp_path, "data.csv", text))
    assert list(dataset) == [
        Sample("a", {"prompt": "What is 2+2?"}, 4.0, {"topic": "math"}),
        Sample("b", {"country": "Peru"}, ["Lima", "lima"], {"topic": "geo", "hard": True}),
        Sample("c", {"prompt": "Spell it, please"}, "007", {"topic": "words"}),  # "007" is no number
        Sample("row-4", {"prompt": "Last one"}, -150.0, {}),
        Sample("e", {"prompt": "A question over\ntwo lines"}, "yes", {}),
    ]


def test_csv_with_a_mapping_and_a_bom(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes("\ufeffquestion,answer\nCapital of Italy?,Rome\n".encode())
    dataset = Dataset.load(path, columns={"input": "question", "target": "answer"})
    assert dataset.samples == [Sample("row-1", {"prompt": "Capital of Italy?"}, "Rome", {})]


def test_a_json_file_holds_an_array_of_samples(tmp_path):
    path = _write(tmp_path, "d.json", json.dumps([{"input": "a", "target": "b"}, {"input": "c"}]))
    assert [s.id for s in Dataset.load(path)] == ["row-1", "row-2"]
    with pytest.raises(
        DatasetError, match=r"^d3\.json: not valid JSON \(Expecting value at line 3 column 1\)"
    ):
        Dataset.load(_write(tmp_path, "d3.json", '[{"input": "a"},\n {"input": "b"},\n]'))
    with pytest.raises(
        DatasetError, match=r"^d2\.json: a \.json dataset is an array of sample objects, not a dict"
    ):
        Dataset.load(_write(tmp_path, "d2.json", '{"input": "a"}'))


def test_the_first_bad_sample_stops_the_load_naming_its_line_and_the_fix(tmp_path):
    path = _write(
        tmp_path,
        "data.jsonl",
        _jsonl({"input": "fine", "target": "x"}, {"input": "ok"}, '{"input": "broken",', {"question": "q"}),
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "data.jsonl line 3: not valid JSON (Expecting property name enclosed in double quotes at column 20); "
        "fix it or leave it out"
    )
    assert message.endswith("(or skip bad samples with skip_bad / --skip-bad)")


def test_skip_bad_collects_every_bad_sample_with_its_line(tmp_path):
    path = _write(
        tmp_path,
        "data.jsonl",
        _jsonl(
            {"id": "a", "input": "fine", "target": "x"},
            '{"input": "broken",',
            {"question": "q"},
            {"input": ""},
            {"input": 5},
            {"input": "q", "target": True},
            {"input": "q", "target": {"a": 1}},
            {"id": "a", "input": "again"},
            '["not", "an", "object"]',
            {"input": "q", "target": []},
            {"input": "q", "metadata": "x"},
            '{"input": "q", "target": NaN}',
            {"input": "last good one"},
        ),
    )
    dataset = Dataset.load(path, skip_bad=True)
    assert [s.id for s in dataset] == ["a", "line-13"]
    assert [line.split(":")[0] for line in dataset.skipped] == [f"data.jsonl line {n}" for n in range(2, 13)]
    told = "\n".join(dataset.skipped)
    for problem in (
        "line 3: no 'input' field (fields: question); add one, or name the field",
        "line 4: 'input' is empty; give the question",
        "line 5: 'input' is a number; give text or a JSON object",
        "line 6: 'target' is a boolean; write it as text ('true')",
        "line 7: 'target' is a dict; give text, a list of acceptable answers or a number",
        "line 8: id 'a' is already used by line 1; give each sample its own id",
        "line 9: a sample is a JSON object with an input, not a list",
        "line 10: 'target' is an empty list",
        "line 11: 'metadata' is a string; give a JSON object",
        "line 12: not valid JSON (NaN is not a JSON number",
    ):
        assert problem in told, problem


def test_csv_errors_name_the_row_and_its_line(tmp_path):
    text = 'id,input,target\na,fine,1\nb,,2\nc,"{not json}",3\nd,x,y,extra\ne,ok,[1\n'
    dataset = Dataset.load(_write(tmp_path, "data.csv", text), skip_bad=True)
    assert [s.id for s in dataset] == ["a"]
    assert dataset.skipped == [
        "data.csv row 2 (line 3): no 'input' field (fields: id, target); add one, or name the field that "
        "holds the input in the column mapping (input=NAME)",
        "data.csv row 3 (line 4): the 'input' cell starts like JSON but does not parse "
        "(Expecting property name enclosed in double quotes at column 2); fix it or leave it out",
        "data.csv row 4 (line 5): 4 cells, but the header names 3 columns",
        "data.csv row 5 (line 6): the 'target' cell starts like JSON but does not parse "
        "(Expecting ',' delimiter at column 3); fix it or leave it out",
    ]


def test_a_csv_without_the_input_column_is_refused_whole(tmp_path):
    with pytest.raises(DatasetError, match=r"^q\.csv: no 'input' column \(columns: question, answer\); name"):
        Dataset.load(_write(tmp_path, "q.csv", "question,answer\nx,y\n"), skip_bad=True)
    with pytest.raises(DatasetError, match=r"^q2\.csv line 1: column 'a' is named twice"):
        Dataset.load(_write(tmp_path, "q2.csv", "a,input,a\n1,2,3\n"))
    with pytest.raises(DatasetError, match=r"^q3\.csv line 2: .*; fix its quoting"):
        Dataset.load(_write(tmp_path, "q3.csv", 'input,target\n"open quote,1\n'))


def test_missing_files_and_unknown_formats_are_one_line(tmp_path):
    with pytest.raises(
        DatasetError, match=r"nope\.jsonl: no such file; give the path of a \.jsonl, \.json or \.csv dataset$"
    ):
        Dataset.load(tmp_path / "nope.jsonl")
    with pytest.raises(
        DatasetError,
        match=r"^data\.txt: unknown dataset format '\.txt'; give a \.jsonl, \.json or \.csv file$",
    ):
        Dataset.load(_write(tmp_path, "data.txt", "x"))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DatasetError, match=r"dir\.jsonl: is a directory"):
        Dataset.load(tmp_path / "dir.jsonl")
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"input": "ok"}\n{"input": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"^latin\.jsonl line 2: not UTF-8 text; save the file as UTF-8$"):
        Dataset.load(path)


def test_an_empty_dataset_or_one_with_only_bad_samples_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"^e\.jsonl: holds no samples; add lines"):
        Dataset.load(_write(tmp_path, "e.jsonl", "\n\n"))
    with pytest.raises(
        DatasetError, match=r"^b\.jsonl: holds no samples \(first: b\.jsonl line 1: 'input' is empty"
    ):
        Dataset.load(_write(tmp_path, "b.jsonl", _jsonl({"input": " "})), skip_bad=True)


def test_a_line_over_the_bound_is_a_bad_sample(tmp_path):
    big = {"input": "x" * (MAX_SAMPLE_BYTES + 1)}
    path = _write(tmp_path, "big.jsonl", _jsonl(big, {"input": "small"}))
    with pytest.raises(
        DatasetError,
        match=r"^big\.jsonl line 1: 1,048,5\d\d bytes, over the limit of 1,048,576 for one sample",
    ):
        Dataset.load(path)
    assert [s.id for s in Dataset.load(path, skip_bad=True)] == ["line-2"]


def test_a_file_over_the_bound_is_refused_reading_no_more_than_the_bound(tmp_path, monkeypatch):
    import qmcp.eval._dataset as module

    monkeypatch.setattr(module, "MAX_DATASET_BYTES", 1024 * 1024)
    path = _write(tmp_path, "huge.jsonl", _jsonl(*({"input": "y" * 100} for _ in range(20_000))))
    with pytest.raises(
        DatasetError, match=r"^huge\.jsonl: larger than 1 MiB, the most a dataset may hold; split it"
    ):
        Dataset.load(path)
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")  # endless: only the bound is read
    with pytest.raises(DatasetError, match=r"larger than 1 MiB"):
        Dataset.load(zero)


def test_inputs_nested_deeper_than_stored_json_are_refused(tmp_path):
    deep: object = "x"
    for _ in range(150):
        deep = {"a": deep}
    path = _write(tmp_path, "deep.jsonl", json.dumps({"input": deep}) + "\n")
    with pytest.raises(DatasetError, match=r"^deep\.jsonl line 1: 'input' is nested deeper than 100 levels"):
        Dataset.load(path)
    very = "[" * 100_000 + "]" * 100_000  # past the parser's recursion limit
    path = _write(tmp_path, "deeper.jsonl", '{"input": "ok"}\n' + f'{{"input": {very}}}\n')
    with pytest.raises(
        DatasetError, match=r"^deeper\.jsonl line 2: nested deeper than 100 levels; flatten it"
    ):
        Dataset.load(path)


def test_an_id_too_long_for_the_store_is_refused():
    with pytest.raises(DatasetError, match=r"^records row 1: 'id' is 201 characters, over 200; shorten it"):
        Dataset.from_records([{"id": "x" * 201, "input": "q"}])


def test_records_round_trip_and_hash_alike_however_read(tmp_path):
    path = _write(
        tmp_path,
        "d.jsonl",
        _jsonl({"id": "a", "input": "q", "target": 3}, {"input": {"k": [1, 2]}, "target": ["x"], "m": 1}),
    )
    loaded = Dataset.load(path)
    again = Dataset.from_records(json.loads(json.dumps(loaded.records())), source="stored")
    assert again.samples == loaded.samples
    assert again.digest == loaded.digest
    changed = Dataset.from_records([*loaded.records()[:1], {"input": {"k": [1, 3]}, "target": ["x"]}])
    assert changed.digest != loaded.digest


def test_head_keeps_the_first_samples():
    dataset = Dataset.from_records({"input": f"q{i}"} for i in range(5))
    assert [s.id for s in dataset.head(2)] == ["row-1", "row-2"]
    assert len(dataset.head(50)) == 5
    with pytest.raises(UserInputError, match=r"samples: 0 is not a number of samples; give 1 or more"):
        dataset.head(0)


def test_from_records_refuses_the_first_bad_record_by_its_row():
    with pytest.raises(DatasetError, match=r"^mine row 2: no 'input' field"):
        Dataset.from_records([{"input": "a"}, {"target": "b"}], source="mine")
    assert issubclass(DatasetError, UserInputError)


def test_records_from_python_hold_only_what_json_can():
    with pytest.raises(
        DatasetError, match=r"^records row 1: 'input' holds NaN or Infinity, which JSON cannot carry"
    ):
        Dataset.from_records([{"input": {"x": float("nan")}}])
    with pytest.raises(DatasetError, match=r"^records row 1: 'input' is not JSON-serialisable"):
        Dataset.from_records([{"input": {"when": object()}}])
    with pytest.raises(DatasetError, match=r"^records row 2: 'metadata' holds NaN or Infinity"):
        Dataset.from_records([{"input": "a"}, {"input": "b", "metadata": {"w": float("inf")}}])
    with pytest.raises(
        DatasetError, match=r"^records row 1: a field besides input, target and id is not JSON"
    ):
        Dataset.from_records([{"input": "a", "extra": {1, 2}}])


def test_a_nul_character_no_database_can_store_is_refused(tmp_path):
    path = _write(
        tmp_path,
        "nul.jsonl",
        _jsonl({"input": "ok"}, {"input": {"q": "a\u0000b"}}, {"input": "x", "id": "a\u0000"}),
    )
    dataset = Dataset.load(path, skip_bad=True)
    assert dataset.skipped == [
        "nul.jsonl line 2: 'input.q' contains a NUL character (\\x00), which the database cannot store; remove it",
        "nul.jsonl line 3: 'id' contains a NUL character (\\x00), which the database cannot store; remove it",
    ]
