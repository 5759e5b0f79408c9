"""What evaluation yields (samples, vectors, scalars), the errors it raises and the label-set helpers it shares."""

from __future__ import annotations

from dataclasses import dataclass

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


# Label sets of series live as long as the series, so their name-less copy and their default matching signature
# are cached by identity (the cache holds the dict itself, so an id is never reused while cached).
_NAMELESS: dict[int, tuple[dict[str, str], dict[str, str]]] = {}
_SIGS: dict[int, tuple[dict[str, str], frozenset[tuple[str, str]]]] = {}
_CACHE_LIMIT = 500_000


def drop_name(labels: dict[str, str]) -> dict[str, str]:
    if NAME not in labels:
        return labels
    hit = _NAMELESS.get(id(labels))
    if hit is not None and hit[0] is labels:
        return hit[1]
    out = dict(labels)
    del out[NAME]
    if len(_NAMELESS) > _CACHE_LIMIT:
        _NAMELESS.clear()
    _NAMELESS[id(labels)] = (labels, out)
    return out


def default_sig(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """Signature of default matching (all labels but the name)."""
    hit = _SIGS.get(id(labels))
    if hit is not None and hit[0] is labels:
        return hit[1]
    sig = frozenset((k, v) for k, v in labels.items() if k != NAME)
    if len(_SIGS) > _CACHE_LIMIT:
        _SIGS.clear()
    _SIGS[id(labels)] = (labels, sig)
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
