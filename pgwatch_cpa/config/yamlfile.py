"""Reading a YAML file an operator (or an attacker) wrote: bounded in size, UTF-8 only, strict and shallow.

``read_yaml`` refuses, with a message naming the line where there is one: a file larger than its limit, bytes
that are not UTF-8, a duplicate key in a mapping, nesting deeper than MAX_DEPTH and a document that aliases
expand beyond MAX_NODES nodes (a "billion laughs"). Never a UnicodeDecodeError, a RecursionError or a hang.

The checks run on the parser's event stream (``check_events``), before any node or object is built, so the
recursive composer and constructor never go deeper than MAX_DEPTH. libyaml parses when PyYAML has it (a 1 MiB
file in well under a second; the pure-Python parser takes seconds per 100,000 scalars).

The rule files (``alerts.rules``) are read with the same functions, under their own limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
)

MAX_DEPTH = 50  # a config is 5 levels deep; PyYAML's recursive constructor overflows near 300
MAX_NODES = 200_000  # keys and values, aliases expanded (a config holds hundreds); loading 200,000 takes ~1 s
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]
_MERGE = "tag:yaml.org,2002:merge"


class YamlFileError(ValueError):
    """The file cannot be read as YAML; the message names the problem and, if known, its line."""


def read_text(path: Path, limit: int, what: str = "file") -> str:
    """The file's text, refused if it is larger than ``limit`` bytes or not UTF-8 (OSError passes through)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)  # never more: /dev/zero or a runaway file is not read to the end
    if len(data) > limit:
        raise YamlFileError(f"{what} is larger than {_size(limit)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(f"line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                            f"{exc.start}); save the file as UTF-8") from None


def _size(limit: int) -> str:
    return f"{limit // 1024**2} MiB" if limit % 1024**2 == 0 else f"{limit // 1024} KiB"


class _Frame:
    __slots__ = ("anchor", "expecting_key", "keys", "weight")

    def __init__(self, anchor: str | None, mapping: bool) -> None:
        self.anchor, self.weight, self.expecting_key = anchor, 1, mapping
        self.keys: dict[tuple[str, str], int] | None = {} if mapping else None


def check_events(text: str, loader: type[yaml.SafeLoader] = SafeLoader, max_depth: int = MAX_DEPTH,
                 max_nodes: int = MAX_NODES) -> None:
    """Raise a MarkedYAMLError for a duplicate scalar key, nesting deeper than ``max_depth`` or more than
    ``max_nodes`` nodes once aliases are expanded. Linear in the events; nothing is composed or constructed."""
    resolver = yaml.resolver.Resolver()
    stack: list[_Frame] = []
    anchors: dict[str, int] = {}  # anchor -> nodes under it

    def add(weight: int, key: ScalarEvent | None, mark: Any) -> None:
        if not stack:
            return
        parent = stack[-1]
        parent.weight += weight
        if parent.weight > max_nodes:
            raise ComposerError(None, None, f"more than {max_nodes:,} keys and values (aliases "
                                "expanded)", mark)
        if parent.keys is None:
            return
        if parent.expecting_key and key is not None:
            tag = key.tag if key.tag not in (None, "!") else resolver.resolve(yaml.ScalarNode, key.value,
                                                                              key.implicit)
            ident = (tag, key.value)
            if tag != _MERGE and ident in parent.keys:
                raise ComposerError(None, None, f"duplicate key {key.value!r} (first at line "
                                    f"{parent.keys[ident]})", mark)
            parent.keys[ident] = mark.line + 1
        parent.expecting_key = not parent.expecting_key

    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, CollectionStartEvent):
            if len(stack) >= max_depth:
                raise ComposerError(None, None, f"nested more than {max_depth} levels deep",
                                    event.start_mark)  # type: ignore[arg-type]
            stack.append(_Frame(event.anchor, isinstance(event, MappingStartEvent)))
        elif isinstance(event, MappingEndEvent | SequenceEndEvent):
            frame = stack.pop()
            if frame.anchor is not None:
                anchors[frame.anchor] = frame.weight
            add(frame.weight, None, event.start_mark)
        elif isinstance(event, ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            add(1, event, event.start_mark)
        elif isinstance(event, AliasEvent):
            add(anchors.get(event.anchor or "", 1), None, event.start_mark)  # an unknown alias: the loader says


def parse_yaml(text: str, *, loader: type[yaml.SafeLoader] = SafeLoader, max_nodes: int = MAX_NODES) -> Any:
    """The document in ``text``; YamlFileError (with the line) for invalid, duplicate-keyed or hostile YAML."""
    try:
        check_events(text, loader, max_nodes=max_nodes)
        return yaml.load(text, Loader=loader)  # a SafeLoader (libyaml's when available) or a subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlFileError(f"{where}invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"invalid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors raise these for scalars it resolved but cannot build: an integer of more than
        # 4,300 digits, a malformed timestamp or base64 value.
        raise YamlFileError(f"invalid YAML value: {str(exc).partition('; use sys.')[0]}") from None


def read_yaml(path: Path, limit: int, what: str = "file") -> Any:
    """read_text, then parse_yaml."""
    return parse_yaml(read_text(path, limit, what))
