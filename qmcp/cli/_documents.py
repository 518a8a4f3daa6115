"""Reading team files safely: a size bound, bounded alias expansion and nesting, no duplicate keys.

A team file may come from anyone (a repository, a colleague, the internet), and YAML lets 440
bytes of aliases expand to billions of values. This module turns the file's text into plain
data within fixed bounds, refusing anything else with one line, before the framework is even
imported. The bounds are counted while the text is read (YAML events, JSON tokens), so the first
breach stops it: a hostile 4 MB file costs a fraction of a second, not a minute and gigabytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable
from typing import Any

import yaml

from qmcp.agentframework.errors import UserInputError

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_INT_DIGITS",
    "MAX_NODES",
    "check_json_bounds",
    "parse_document",
    "too_large",
]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""The largest team file read: room for hundreds of agents with long prompts."""
MAX_NODES = 200_000
"""The most values (mappings, lists, scalars) a file may hold, each alias counting the values it
repeats: a 440-byte alias bomb expands to billions and is refused at its sixth line."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists."""
MAX_INT_DIGITS = 1000
"""The longest integer read (Python refuses to convert more than 4,300 digits, with a ValueError)."""


_NOT_FINITE = "NaN or Infinity, which JSON and the databases cannot hold; use null or a string"


def _int_refusal(digits: int) -> str:
    return f"an integer of {digits:,} digits; at most {MAX_INT_DIGITS:,} are read"


def too_large(label: str) -> UserInputError:
    """The refusal of a file past `MAX_FILE_BYTES`."""
    return UserInputError(
        f"{label}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; split it into several files"
    )


class _Refused(Exception):
    """A file beyond the bounds above; reported as what is wrong, not as invalid YAML."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, mark.line + 1


def _check_events(text: str) -> None:
    """Count a YAML file's values from libyaml's events as they come; stop at the first breach.

    Composing nodes or constructing data (in Python, or even libyaml's composer) costs far more
    than reading events, so the bounds are checked on the event stream first: each event making
    a value counts 1, each alias what its anchor held once expanded, and an alias used inside the
    node it names is refused. Only a file within all bounds is then composed.
    """
    loader = yaml.CSafeLoader(text)
    try:
        anchors: dict[str, int] = {}
        open_sizes: list[int] = []  # the expanded size so far of each open collection
        open_anchors: list[str | None] = []
        values = expanded = aliases = 0
        while (event := loader.get_event()) is not None:
            joins_parent = True
            if isinstance(event, yaml.AliasEvent):
                if event.anchor in open_anchors:
                    raise _Refused(
                        problem=f"alias *{event.anchor} is used inside the node it names (a recursive alias)",
                        mark=event.start_mark,
                    )
                size = anchors.get(str(event.anchor), 1)  # an unknown anchor: the composer says so below
                aliases += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                size = open_sizes.pop()
                anchor = open_anchors.pop()
                if anchor is not None:
                    anchors[anchor] = size
                if open_sizes:
                    open_sizes[-1] += size
                continue
            elif isinstance(event, yaml.NodeEvent):
                values += 1
                size = 1
                if values > MAX_NODES:
                    raise _Refused(
                        problem=f"more than {MAX_NODES:,} values (stopped reading at value {values:,}); "
                        "split it into several files",
                        mark=event.start_mark,
                    )
                if isinstance(event, yaml.CollectionStartEvent):
                    if len(open_sizes) >= MAX_DEPTH:
                        raise _Refused(
                            problem=f"nested deeper than {MAX_DEPTH} levels", mark=event.start_mark
                        )
                    open_sizes.append(1)  # joins its parent, whole, at its end
                    open_anchors.append(event.anchor)
                    joins_parent = False
                elif event.anchor is not None:
                    anchors[event.anchor] = 1
            else:  # stream and document boundaries
                continue
            expanded += size
            if joins_parent and open_sizes:
                open_sizes[-1] += size
            if expanded > MAX_NODES:
                raise _Refused(
                    problem=f"expands to more than {MAX_NODES:,} values (stopped reading at {expanded:,}, "
                    f"{aliases:,} alias(es) expanded; each use of an alias counts what it repeats); "
                    "write the file out without aliases, or split it",
                    mark=event.start_mark,
                )
    finally:
        loader.dispose()


class _TeamLoader(yaml.CSafeLoader):
    """libyaml's safe loader that reads only finite numbers of bounded length and refuses duplicate keys.

    It runs only on a file `_check_events` has passed, so composing and constructing it is bounded.
    """

    def construct_int(self, node: Any) -> Any:
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(problem=_int_refusal(digits), mark=node.start_mark)
        return self.construct_yaml_int(node)

    def construct_float(self, node: Any) -> Any:
        value = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(problem=_NOT_FINITE, mark=node.start_mark)
        return value

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may override keys: allowed
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            problem=f"key {key!r} is given twice in one mapping; keep one",
                            problem_mark=key_node.start_mark,
                        )
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


_TeamLoader.add_constructor("tag:yaml.org,2002:int", _TeamLoader.construct_int)
_TeamLoader.add_constructor("tag:yaml.org,2002:float", _TeamLoader.construct_float)


class _Unreadable(ValueError):
    """A JSON number qmcp does not read (too long, not finite)."""


def _json_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise _Unreadable(_int_refusal(len(text.lstrip("-"))))
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unreadable(_NOT_FINITE)
    return value


def _json_constant(_text: str) -> Any:
    raise _Unreadable(_NOT_FINITE)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _DuplicateKey(key)
        mapping[key] = value
    return mapping


class _DuplicateKey(ValueError):
    pass


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]|[^\s,:\[\]{}"]+')
"""A JSON string, an opening or closing bracket, or any other value (number, true, null, ...)."""


def check_json_bounds(label: str, text: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Count a JSON text's values and nesting from its tokens; a `UserInputError` at the first breach.

    Decoding builds every value first (2 million of them in a 4 MB file), so the tokens are
    counted before: a string (keys included), number, literal, object or array counts 1, and the
    scan stops at the value past `MAX_NODES` or the bracket past `max_depth`. An invalid text is
    left to the decoder to report.
    """
    if len(text.encode()) > MAX_FILE_BYTES:
        raise too_large(label)
    values = depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "]}":
            depth -= 1
            continue
        values += 1
        if values > MAX_NODES:
            raise UserInputError(
                f"{label}: more than {MAX_NODES:,} values (stopped reading at value {values:,}); "
                "split it into several files"
            )
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise UserInputError(f"{label}: nested deeper than {max_depth} levels")


def parse_document(label: str, text: str, *, is_json: bool = False) -> Any:
    """The data of a YAML or JSON file, or a one-line `UserInputError` saying which bound it breaks."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise too_large(label)
    if is_json:
        check_json_bounds(label, text)
    try:
        if not is_json:
            _check_events(text)
            loader = _TeamLoader(text)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
        document = json.loads(
            text,
            object_pairs_hook=_json_object,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except _DuplicateKey as error:
        raise UserInputError(
            f"{label}: key {error.args[0]!r} is given twice in one object; keep one"
        ) from None
    except _Unreadable as error:
        raise UserInputError(f"{label}: {error}") from None
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"{label}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except _Refused as error:
        raise UserInputError(f"{label}: line {error.line}: {error.problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise UserInputError(f"{label}: invalid YAML{where}: {problem}") from None
    return document
