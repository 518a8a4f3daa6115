"""Datasets: the samples an evaluation asks each topology, read from JSONL, JSON or CSV within bounds.

A sample is an `input` (text becomes `{"prompt": text}`; a JSON object is used as is), a `target`
(text, a list of acceptable answers, a number, or nothing), an `id` and the rest as metadata. Other
column names are mapped (`columns={"input": "question"}`).

A bad sample is told in one line naming the file, its line (JSONL) or row (CSV, JSON, records) and
the fix; the first one stops the load unless `skip_bad`, which collects the lines in
`Dataset.skipped`. A file is read only up to `MAX_DATASET_BYTES` (so `/dev/zero` is refused too), a
line or row may hold at most `MAX_SAMPLE_BYTES`, and inputs nest no deeper than the JSON qmcp stores
(`MAX_JSON_DEPTH`): a sample's input becomes an execution's input.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agentframework.errors import UserInputError
from ..agentframework.models import MAX_JSON_DEPTH, json_problem, nul_field, nul_message

__all__ = [
    "COLUMN_NAMES",
    "MAX_DATASET_BYTES",
    "MAX_ID_LENGTH",
    "MAX_SAMPLES",
    "MAX_SAMPLE_BYTES",
    "Dataset",
    "DatasetError",
    "Sample",
    "Target",
    "format_number",
]

MAX_DATASET_BYTES = 64 * 1024 * 1024
"""The largest dataset file read: only this much (and one byte) is read before it is refused."""
MAX_SAMPLE_BYTES = 1024 * 1024
"""The largest line (JSONL), row (CSV) or item (JSON) one sample may take."""
MAX_SAMPLES = 100_000
"""The most samples one dataset holds: each becomes an execution per topology and repeat."""
MAX_ID_LENGTH = 200
"""The longest sample id (the length `eval_scores.sample_id` stores)."""
COLUMN_NAMES = ("input", "target", "id", "metadata")
"""The columns a dataset's records are read by; `columns` maps other names onto them."""

Target = str | list[str] | float | None
"""What a sample's answer is scored against: text, any of a list of acceptable answers, a number, or none."""


class DatasetError(UserInputError):
    """A dataset file or one of its samples cannot be read; the message names where and the fix."""


@dataclass(frozen=True)
class Sample:
    """One question of a dataset and what its answer is scored against."""

    id: str
    input: dict[str, Any]
    target: Target
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The sample as a JSON record that `Dataset.from_records` reads back to an equal sample
        (what an eval run stores to resume without the file)."""
        return {"id": self.id, "input": self.input, "target": self.target, "metadata": self.metadata}


class Dataset:
    """The samples of a file or of records, in order, and the bad ones skipped (`skip_bad`)."""

    def __init__(self, samples: Iterable[Sample], *, skipped: Iterable[str] = (), source: str = "records"):
        self.samples: list[Sample] = list(samples)
        self.skipped: list[str] = list(skipped)
        self.source = source
        """The file's name (or "records"): where the messages say a sample came from."""

    @classmethod
    def load(
        cls, path: str | Path, *, columns: Mapping[str, str] | None = None, skip_bad: bool = False
    ) -> Dataset:
        """The samples of a `.jsonl`, `.json` (an array of objects) or `.csv` file (with a header row)."""
        path = Path(path)
        mapping = _mapping(columns)
        data = _read_bounded(path)
        name = path.name
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _build(_jsonl_records(data, name), mapping, skip_bad, name, "line")
        if suffix == ".json":
            return _build(_json_records(data, name), mapping, skip_bad, name, "row")
        return _build(_csv_records(data, name, mapping), mapping, skip_bad, name, "row")

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        columns: Mapping[str, str] | None = None,
        skip_bad: bool = False,
        source: str = "records",
    ) -> Dataset:
        """The samples of records as a JSONL line would hold them (row N of `source` in messages)."""
        numbered = ((number, record, None) for number, record in enumerate(records, start=1))
        return _build(numbered, _mapping(columns), skip_bad, source, "row")

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        return f"Dataset({self.source!r}, {len(self.samples)} samples, {len(self.skipped)} skipped)"

    def head(self, n: int) -> Dataset:
        """The first `n` samples (`--samples N`); the skipped lines stay told."""
        if n < 1:
            raise UserInputError(f"samples: {n} is not a number of samples; give 1 or more")
        return Dataset(self.samples[:n], skipped=self.skipped, source=self.source)

    def records(self) -> list[dict[str, Any]]:
        """Every sample as `Sample.to_record` gives it."""
        return [sample.to_record() for sample in self.samples]

    @property
    def digest(self) -> str:
        """SHA-256 of the samples' canonical JSON: the same samples, however read, hash alike (a resumed
        eval can tell the dataset it started with from a changed one)."""
        text = json.dumps(self.records(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


# -- reading -----------------------------------------------------------------------------------------

_SUFFIXES = (".jsonl", ".json", ".csv")

_Record = tuple[int, Any, int | None]
"""(line or row number, the record or the problem as a string prefixed by `_BAD`, the CSV line)."""


class _Bad(str):
    """A record that could not even be parsed: the problem, in a few words."""


def _read_bounded(path: Path) -> bytes:
    name = path.name or str(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise DatasetError(
            f"{name}: unknown dataset format {path.suffix or '(no extension)'!r}; "
            "give a .jsonl, .json or .csv file"
        )
    try:
        with path.open("rb") as file:
            data = file.read(MAX_DATASET_BYTES + 1)
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: no such file; give the path of a .jsonl, .json or .csv dataset"
        ) from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory; give the path of a dataset file") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_DATASET_BYTES:
        raise DatasetError(
            f"{name}: larger than {MAX_DATASET_BYTES // (1024 * 1024)} MiB, the most a dataset may hold; "
            "split it into smaller files"
        )
    return data


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetError(f"{name} line {line}: not UTF-8 text; save the file as UTF-8") from None


def _too_big(size: int) -> _Bad:
    return _Bad(
        f"{size:,} bytes, over the limit of {MAX_SAMPLE_BYTES:,} for one sample; shorten it or split it"
    )


def _strict_json(text: str) -> Any:
    """`json.loads` refusing NaN and Infinity (JSON has no such numbers)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON number; use null or a string")

    return json.loads(text, parse_constant=refuse)


def _json_value(text: str, what: str = "not valid JSON") -> Any:
    """The JSON value of `text`, or a `_Bad` saying `what` it is and why."""
    try:
        return _strict_json(text)
    except RecursionError:
        return _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels; flatten it")
    except json.JSONDecodeError as error:
        where = (
            f"line {error.lineno} column {error.colno}" if "\n" in text.strip() else f"column {error.colno}"
        )
        return _Bad(f"{what} ({error.msg} at {where}); fix it or leave it out")
    except ValueError as error:
        return _Bad(f"{what} ({error}); fix it or leave it out")


def _jsonl_records(data: bytes, name: str) -> Iterator[_Record]:
    text = _decode(data, name)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        size = len(line.encode())
        yield number, (_too_big(size) if size > MAX_SAMPLE_BYTES else _json_value(line)), None


def _json_records(data: bytes, name: str) -> Iterator[_Record]:
    value = _json_value(_decode(data, name))
    if isinstance(value, _Bad):
        raise DatasetError(f"{name}: {value}")
    if not isinstance(value, list):
        raise DatasetError(
            f"{name}: a .json dataset is an array of sample objects, not a {type(value).__name__}; "
            "wrap the samples in [ ] or write them as JSONL"
        )
    for number, item in enumerate(value, start=1):
        size = len(json.dumps(item, ensure_ascii=False).encode())
        yield number, (_too_big(size) if size > MAX_SAMPLE_BYTES else item), None


def _csv_records(data: bytes, name: str, mapping: Mapping[str, str]) -> Iterator[_Record]:
    reader = csv.reader(io.StringIO(_decode(data, name), newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DatasetError(f"{name} line {reader.line_num}: {error}; fix the header row") from None
    if not header or not any(cell.strip() for cell in header):
        raise DatasetError(f"{name}: no header row; the first row names the columns (input, target, ...)")
    header = [cell.strip() for cell in header]
    seen: set[str] = set()
    for cell in header:
        if cell in seen:
            raise DatasetError(
                f"{name} line 1: column {cell!r} is named twice; give each column its own name"
            )
        seen.add(cell)
    missing = mapping.get("input", "input")
    if missing not in seen:
        raise DatasetError(
            f"{name}: no {missing!r} column (columns: {', '.join(header)}); "
            f"name the column that holds the input in the column mapping (input=NAME)"
        )
    number = 0
    while True:
        started = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DatasetError(
                f"{name} line {started}: {error}; fix its quoting (a cell holding a comma, quote or "
                "newline is written in double quotes, a quote inside it doubled)"
            ) from None
        if not any(cell.strip() for cell in row):
            continue
        number += 1
        size = sum(len(cell.encode()) for cell in row)
        if size > MAX_SAMPLE_BYTES:
            yield number, _too_big(size), started
        elif len(row) > len(header):
            yield number, _Bad(f"{len(row)} cells, but the header names {len(header)} columns"), started
        else:
            yield number, _csv_cells(dict(zip(header, row, strict=False)), mapping), started


_CSV_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _csv_cells(row: dict[str, str], mapping: Mapping[str, str]) -> dict[str, Any] | _Bad:
    """A CSV row as the JSON record it stands for: JSON in the input (an object), target (a list) and
    metadata (an object) cells is read as JSON, a number in the target cell as a number; empty cells
    are left out."""
    record: dict[str, Any] = {}
    for column, cell in row.items():
        text = cell.strip()
        if not text:
            continue
        role = next((r for r in COLUMN_NAMES if mapping.get(r, r) == column), None)
        value: Any = cell
        opens = {"input": "{", "target": "[", "metadata": "{"}.get(role or "")
        if opens and text.startswith(opens):
            value = _json_value(text, f"the {column!r} cell starts like JSON but does not parse")
            if isinstance(value, _Bad):
                return value
        elif role == "target" and _CSV_NUMBER.fullmatch(text):
            value = float(text)
        record[column] = value
    return record


# -- building samples ----------------------------------------------------------------------------------


def _mapping(columns: Mapping[str, str] | None) -> dict[str, str]:
    mapping = dict(columns or {})
    for role, column in mapping.items():
        if role not in COLUMN_NAMES:
            raise UserInputError(
                f"column mapping {role}={column}: {role!r} is not a dataset column; map one of: "
                f"{', '.join(COLUMN_NAMES)}"
            )
        if not isinstance(column, str) or not column.strip():
            raise UserInputError(f"column mapping {role}=: give the name of the column that holds the {role}")
    return mapping


def _build(
    records: Iterable[_Record], mapping: Mapping[str, str], skip_bad: bool, source: str, unit: str
) -> Dataset:
    samples: list[Sample] = []
    skipped: list[str] = []
    used: dict[str, int] = {}
    for number, record, csv_line in records:
        where = f"{source} {unit} {number}" + (f" (line {csv_line})" if csv_line else "")
        try:
            sample = _sample(record, mapping, f"{unit}-{number}")
            if sample.id in used:
                raise DatasetError(
                    f"id {sample.id!r} is already used by {unit} {used[sample.id]}; give each sample its own id"
                )
        except DatasetError as error:
            message = f"{where}: {error}"
            if not skip_bad:
                raise DatasetError(f"{message} (or skip bad samples with skip_bad / --skip-bad)") from None
            skipped.append(message)
            continue
        used[sample.id] = number
        samples.append(sample)
        if len(samples) > MAX_SAMPLES:
            raise DatasetError(
                f"{source}: more than {MAX_SAMPLES:,} samples, the most one evaluation takes; split it"
            )
    if not samples:
        first = f" (first: {skipped[0]})" if skipped else ""
        raise DatasetError(f"{source}: holds no samples{first}; add lines with an input")
    return Dataset(samples, skipped=skipped, source=source)


def _sample(record: Any, mapping: Mapping[str, str], default_id: str) -> Sample:
    if isinstance(record, _Bad):
        raise DatasetError(str(record))
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"a sample is a JSON object with an input, not a {_kind(record)}; "
            'write it as {"input": ..., "target": ...}'
        )
    nul = nul_field(dict(record))
    if nul is not None:  # PostgreSQL cannot store it, SQLite would: refused alike
        raise DatasetError(nul_message(repr(nul.removeprefix("."))))
    column = {role: mapping.get(role, role) for role in COLUMN_NAMES}
    if column["input"] not in record:
        names = ", ".join(map(str, record)) or "none"
        raise DatasetError(
            f"no {column['input']!r} field (fields: {names}); add one, or name the field that holds the "
            "input in the column mapping (input=NAME)"
        )
    others = {str(k): v for k, v in record.items() if k not in column.values()}
    problem = json_problem(others) if others else None
    if problem is not None:  # only records from Python can hold what JSON cannot
        raise DatasetError(f"a field besides input, target and id {problem}")
    metadata = others | _metadata(record.get(column["metadata"]), column["metadata"])
    return Sample(
        id=_id(record.get(column["id"]), column["id"], default_id),
        input=_input(record[column["input"]], column["input"]),
        target=_target(record.get(column["target"]), column["target"]),
        metadata=metadata,
    )


def _kind(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "number", float: "number", list: "list"}.get(
        type(value), type(value).__name__
    )


def _input(value: Any, field: str) -> dict[str, Any]:
    if isinstance(value, str):
        if not value.strip():
            raise DatasetError(f"{field!r} is empty; give the question")
        return {"prompt": value}
    if isinstance(value, Mapping):
        if not value:
            raise DatasetError(f"{field!r} is an empty object; give the question")
        problem = json_problem(value)
        if problem is not None:
            raise DatasetError(f"{field!r} {problem}")
        return {str(k): v for k, v in value.items()}
    raise DatasetError(f"{field!r} is a {_kind(value)}; give text or a JSON object")


def _target(value: Any, field: str) -> Target:
    if value is None:
        return None
    if isinstance(value, bool):
        raise DatasetError(f"{field!r} is a boolean; write it as text ({str(value).lower()!r})")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise DatasetError(f"{field!r} is not a finite number; give a number, text or a list")
        return number
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if not value:
            raise DatasetError(f"{field!r} is an empty list; list the acceptable answers, or leave it out")
        answers: list[str] = []
        for item in value:
            if isinstance(item, str):
                answers.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool) and math.isfinite(item):
                answers.append(format_number(float(item)))
            else:
                raise DatasetError(f"{field!r} lists a {_kind(item)}; acceptable answers are text or numbers")
        return answers
    raise DatasetError(f"{field!r} is a {_kind(value)}; give text, a list of acceptable answers or a number")


def _id(value: Any, field: str, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(f"{field!r} is a {_kind(value)}; give text or a whole number")
    text = str(value).strip()
    if not text:
        raise DatasetError(f"{field!r} is empty; give the sample an id or leave the field out")
    if len(text) > MAX_ID_LENGTH:
        raise DatasetError(f"{field!r} is {len(text)} characters, over {MAX_ID_LENGTH}; shorten it")
    return text


def _metadata(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DatasetError(f"{field!r} is a {_kind(value)}; give a JSON object (or leave it out)")
    problem = json_problem(value)
    if problem is not None:
        raise DatasetError(f"{field!r} {problem}")
    return {str(k): v for k, v in value.items()}


def format_number(value: float) -> str:
    """A number as a person writes it: `42` rather than `42.0`, `0.5`, `1e+20`."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
