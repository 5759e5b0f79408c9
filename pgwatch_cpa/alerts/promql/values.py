"""What evaluation yields (samples, vectors, scalars), the errors it raises and the label-set helpers it shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgwatch_cpa.errors import PgwatchError

NAME = "__name__"


class PromQLError(PgwatchError):
    """An expression that does not parse, or uses constructs outside the supported subset."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class EvalError(PgwatchError):
    """An evaluation that Prometheus would fail too (e.g. many-to-one matching without group_left)."""


@dataclass(slots=True)
class Sample:
    labels: dict[str, str]
    value: float


Vector = list[Sample]
Value = Vector | float


class _IdentityCache:
    """A value derived from a label set, cached by the label set's identity while the label set is in use.

    Label sets of stored series live as long as their series and are read by every evaluation; label sets of
    intermediate results (aggregations, binary operations) are new at every evaluation. An entry holds its dict,
    so an id is never reused while cached. Two generations: :func:`rotate_label_caches` (once per evaluation
    round, by the alert engine) drops the entries the previous round did not use, so intermediate label sets do
    not pile up. Before, both caches only emptied at 500,000 entries (about 1 KiB each, dict and signature kept
    alive): the daemon's RSS grew for hours with the shipped rules at a 1 s interval (issue 15). ``limit`` also
    rotates a generation that grows too big, for callers that never rotate.
    """

    __slots__ = ("limit", "new", "old")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.new: dict[int, tuple[dict[str, str], Any]] = {}
        self.old: dict[int, tuple[dict[str, str], Any]] = {}

    def get(self, labels: dict[str, str]) -> Any:
        key = id(labels)
        hit = self.new.get(key)
        if hit is None:
            hit = self.old.pop(key, None)
            if hit is None:
                return None
            self.new[key] = hit  # in use: promoted to the current generation
        return hit[1] if hit[0] is labels else None

    def put(self, labels: dict[str, str], value: Any) -> None:
        if len(self.new) >= self.limit:
            self.rotate()
        self.new[id(labels)] = (labels, value)

    def rotate(self) -> None:
        self.old, self.new = self.new, {}

    def __len__(self) -> int:
        return len(self.new) + len(self.old)


_CACHE_LIMIT = 100_000
_NAMELESS = _IdentityCache(_CACHE_LIMIT)
_SIGS = _IdentityCache(_CACHE_LIMIT)


def rotate_label_caches() -> None:
    """Start a new cache generation: call once per evaluation round (all rules at one timestamp)."""
    _NAMELESS.rotate()
    _SIGS.rotate()


def label_cache_entries() -> int:
    """Entries held by the label-set caches (bounded: about two evaluation rounds' worth)."""
    return len(_NAMELESS) + len(_SIGS)


def drop_name(labels: dict[str, str]) -> dict[str, str]:
    if NAME not in labels:
        return labels
    hit: dict[str, str] | None = _NAMELESS.get(labels)
    if hit is not None:
        return hit
    out = dict(labels)
    del out[NAME]
    _NAMELESS.put(labels, out)
    return out


def default_sig(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """Signature of default matching (all labels but the name)."""
    hit: frozenset[tuple[str, str]] | None = _SIGS.get(labels)
    if hit is not None:
        return hit
    sig = frozenset((k, v) for k, v in labels.items() if k != NAME)
    _SIGS.put(labels, sig)
    return sig


def several_names(vec: Vector) -> bool:
    return len({s.labels.get(NAME) for s in vec}) > 1


def check_unique(vec: Vector, mixed: bool = True) -> Vector:
    """Prometheus's "same labelset" error; only possible when dropping names from an input of several names."""
    if mixed and len(vec) > 1 and len({frozenset(s.labels.items()) for s in vec}) != len(vec):
        raise EvalError("vector cannot contain metrics with the same labelset")
    return vec


def format_labels(labels: dict[str, str]) -> str:
    """Prometheus's text form: name{a="b", c="d"}."""
    name = labels.get(NAME, "")
    inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()) if k != NAME)
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
