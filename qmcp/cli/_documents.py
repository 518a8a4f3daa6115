"""Reading team files safely: a size bound, bounded alias expansion and nesting, no duplicate keys.

A team file may come from anyone (a repository, a colleague, the internet), and YAML lets 440
bytes of aliases expand to billions of values. This module turns the file's text into plain
data within fixed bounds, refusing anything else with one line, before the framework is even
imported (so a hostile file costs milliseconds, not the CLI's start-up plus a machine's memory).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable
from typing import Any

import yaml

from qmcp.agentframework.errors import UserInputError

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_INT_DIGITS", "MAX_NODES", "parse_document", "too_large"]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""The largest team file read: room for hundreds of agents with long prompts."""
MAX_NODES = 200_000
"""The most values (mappings, lists, scalars) a file may hold, each alias counting the values it
repeats: a 440-byte alias bomb expands to billions and is refused after composing a few dozen."""
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


class _Refused(yaml.MarkedYAMLError):
    """A file beyond the bounds above; reported as what is wrong, not as invalid YAML."""


class _TeamLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that bounds what a file expands to and refuses duplicate keys.

    PyYAML shares an aliased node (`*a`) instead of copying it, so loading a bomb is cheap and
    the cost comes later, when validation walks it as a tree. So each composed node records the
    size it has once expanded (1 + its children's, an alias counting its anchor's), and a node
    past `MAX_NODES` stops the file at once. A recursive alias (a node containing itself) is refused.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise _Refused(
                    problem=f"alias *{event.anchor} is used inside the node it names (a recursive alias)",
                    problem_mark=event.start_mark,
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(
                problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.peek_event().start_mark
            )
        node = super().compose_node(parent, index)
        assert node is not None  # there was an event to compose: it makes a node
        self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(key)] + self._sizes[id(value)] for key, value in node.value)
        else:
            size = 1
        if size > MAX_NODES:
            raise _Refused(
                problem=f"expands to more than {MAX_NODES:,} values (each use of an alias counts what it "
                "repeats); write the file out without aliases, or split it",
                problem_mark=node.start_mark,
            )
        self._sizes[id(node)] = size
        return node

    def construct_int(self, node: Any) -> Any:
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(problem=_int_refusal(digits), problem_mark=node.start_mark)
        return self.construct_yaml_int(node)

    def construct_float(self, node: Any) -> Any:
        value = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(problem=_NOT_FINITE, problem_mark=node.start_mark)
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


def _json_depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_document(label: str, text: str, *, is_json: bool = False) -> Any:
    """The data of a YAML or JSON file, or a one-line `UserInputError` saying which bound it breaks."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise too_large(label)
    try:
        if not is_json:
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
    except RecursionError:
        raise UserInputError(f"{label}: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"{label}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except _Refused as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise UserInputError(f"{label}: {where}{error.problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise UserInputError(f"{label}: invalid YAML{where}: {problem}") from None
    if _json_depth(document) > MAX_DEPTH:
        raise UserInputError(f"{label}: nested deeper than {MAX_DEPTH} levels")
    return document
