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
    """A file beyond the bounds above (or, `invalid`, not YAML qmcp reads): one line naming where."""

    def __init__(self, problem: str, mark: Any, *, invalid: bool = False) -> None:
        super().__init__(problem)
        self.problem, self.invalid = problem, invalid
        self.line, self.column = mark.line + 1, mark.column + 1


_PLAIN_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Open:
    """A list or mapping being read: its value so far and its size once expanded."""

    __slots__ = ("anchor", "has_key", "key", "size", "value")

    def __init__(self, value: list[Any] | dict[Any, Any], anchor: str | None) -> None:
        self.value, self.anchor, self.size = value, anchor, 1
        self.key: Any = None
        self.has_key = False


class _EventReader:
    """Reads a YAML file from libyaml's events, counting values as they come; the first breach stops it.

    Composing nodes first (PyYAML's way, even libyaml's composer) costs more than the file is
    worth and only then lets a bound be checked, so the values are counted from the event stream:
    each event making a value counts 1, each alias what its anchor held once expanded, and an
    alias used inside the node it names is refused. The data is built from the same events; a file
    using what only PyYAML's constructor builds (merge keys, explicit collection tags, complex
    keys, several documents) is still counted to its end, then left to `_TeamLoader`.
    """

    def __init__(self, loader: _TeamLoader) -> None:
        self.loader = loader
        self.anchors: dict[str, tuple[int, Any]] = {}  # its size once expanded, its value
        self.open: list[_Open] = []
        self.values = self.expanded = self.aliases = self.documents = 0
        self.plain = True  # False once the file needs PyYAML's constructor
        self.root: Any = None

    def read(self) -> Any:
        """The file's data, or `_EXOTIC` when the file is within bounds but needs `_TeamLoader`."""
        while (event := self.loader.get_event()) is not None:
            if isinstance(event, yaml.AliasEvent):
                anchor = str(event.anchor)
                if any(o.anchor == anchor for o in self.open):
                    raise _Refused(
                        f"alias *{anchor} is used inside the node it names (a recursive alias)",
                        event.start_mark,
                    )
                if anchor not in self.anchors:  # the composer says it is undefined
                    self.plain = False
                size, value = self.anchors.get(anchor, (1, None))
                self.aliases += 1
                self._expand(size, event)
                self._attach(value, event)
            elif isinstance(event, yaml.ScalarEvent):
                self._count(event)
                self._check_anchor(event)
                value = self._scalar(event) if self.plain else None
                if event.anchor is not None:
                    self.anchors[event.anchor] = (1, value)
                self._expand(1, event)
                self._attach(value, event)
            elif isinstance(event, yaml.CollectionStartEvent):
                self._count(event)
                if len(self.open) >= MAX_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
                self._check_anchor(event)
                if event.tag not in _PLAIN_COLLECTION_TAGS:
                    self.plain = False
                is_mapping = isinstance(event, yaml.MappingStartEvent)
                self.open.append(_Open({} if is_mapping else [], event.anchor))
                self._expand(1, event, joins_parent=False)  # it joins its parent, whole, at its end
            elif isinstance(event, yaml.CollectionEndEvent):
                done = self.open.pop()
                if done.anchor is not None:
                    self.anchors[done.anchor] = (done.size, done.value)
                if self.open:
                    self.open[-1].size += done.size
                self._attach(done.value, event)
            elif isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                self.plain = self.plain and self.documents == 1  # the loader refuses a second one
                self.anchors.clear()  # anchors name nodes of their own document
        return self.root if self.plain else _EXOTIC

    def _check_anchor(self, event: Any) -> None:
        anchor = event.anchor
        if anchor is not None and (anchor in self.anchors or any(o.anchor == anchor for o in self.open)):
            raise _Refused(f"anchor &{anchor} is given twice; rename one", event.start_mark, invalid=True)

    def _count(self, event: Any) -> None:
        self.values += 1
        if self.values > MAX_NODES:
            raise _Refused(
                f"more than {MAX_NODES:,} values (stopped reading at value {self.values:,}); "
                "split it into several files",
                event.start_mark,
            )

    def _expand(self, size: int, event: Any, *, joins_parent: bool = True) -> None:
        self.expanded += size
        if joins_parent and self.open:
            self.open[-1].size += size
        if self.expanded > MAX_NODES:
            raise _Refused(
                f"expands to more than {MAX_NODES:,} values (stopped reading at {self.expanded:,}, "
                f"{self.aliases:,} alias(es) expanded; each use of an alias counts what it repeats); "
                "write the file out without aliases, or split it",
                event.start_mark,
            )

    def _scalar(self, event: Any) -> Any:
        tag, construct = event.tag, None
        if tag is None or tag == "!":  # an implicit tag: str, int, float, bool, null or timestamp
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            construct = self.loader.yaml_constructors.get(tag)
        if tag == _MERGE_TAG:
            self.plain = False
            return None
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return construct(self.loader, node) if construct else self.loader.construct_object(node)

    def _attach(self, value: Any, event: Any) -> None:
        if not self.plain:
            return
        if not self.open:
            self.root = value
            return
        parent = self.open[-1]
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif parent.has_key:
            parent.value[parent.key] = value
            parent.has_key = False
        elif not isinstance(value, Hashable):
            self.plain = False  # a complex key: PyYAML's constructor says what is wrong with it
        elif value in parent.value:
            raise _Refused(
                f"key {value!r} is given twice in one mapping; keep one", event.start_mark, invalid=True
            )
        else:
            parent.key, parent.has_key = value, True


_EXOTIC = object()
"""What `_EventReader.read` returns for a file within bounds that only `_TeamLoader` can build."""


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader (in every PyYAML wheel); PyYAML's own, slower one where it was built without."""


class _TeamLoader(_SafeLoader):  # type: ignore[misc]  # (its base is chosen at import)
    """libyaml's safe loader that reads only finite numbers of bounded length and refuses duplicate keys.

    It builds scalars for `_EventReader`, and whole files the reader has counted but cannot build.
    """

    def construct_int(self, node: Any) -> Any:
        text = str(node.value)  # the digit count only for a long one: most integers are short
        if len(text) > MAX_INT_DIGITS and (digits := sum(c.isalnum() for c in text)) > MAX_INT_DIGITS:
            raise _Refused(_int_refusal(digits), node.start_mark)
        return self.construct_yaml_int(node)

    def construct_float(self, node: Any) -> Any:
        value = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(_NOT_FINITE, node.start_mark)
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


def check_json_bounds(
    label: str, text: str, *, max_depth: int | None = MAX_DEPTH, too_deep: str | None = None
) -> None:
    """Count a JSON text's values and nesting from its tokens; a `UserInputError` at the first breach.

    Decoding builds every value first (2 million of them in a 4 MB file), so the tokens are
    counted before: a string (keys included), number, literal, object or array counts 1, and the
    scan stops at the value past `MAX_NODES` or the bracket past `max_depth` (None: the caller's
    store checks depth, with the message every door gives). `too_deep` replaces the depth's message
    (the sentence the other doors give). An invalid text is left to the decoder to report.
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
            if max_depth is not None and depth > max_depth:
                raise UserInputError(too_deep or f"{label}: nested deeper than {max_depth} levels")


def parse_document(label: str, text: str, *, is_json: bool = False) -> Any:
    """The data of a YAML or JSON file, or a one-line `UserInputError` saying which bound it breaks."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise too_large(label)
    if is_json:
        check_json_bounds(label, text, max_depth=MAX_DEPTH)
    try:
        if not is_json:
            loader = _TeamLoader(text)
            try:
                document = _EventReader(loader).read()
            finally:
                loader.dispose()
            if document is not _EXOTIC:
                return document
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
        where = (
            f"invalid YAML at line {error.line}, column {error.column}"
            if error.invalid
            else f"line {error.line}"
        )
        raise UserInputError(f"{label}: {where}: {error.problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise UserInputError(f"{label}: invalid YAML{where}: {problem}") from None
    return document
