"""The builder collectors write their samples into: metric families with the target's constant labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

Labels = Mapping[str, str]


class MetricSet:
    """Builder for the metric families of one collection; every sample gets the constant labels."""

    def __init__(self, const_labels: Labels | None = None) -> None:
        self._const = dict(const_labels or {})
        self._families: dict[str, Metric] = {}

    def _family(self, name: str, doc: str, typ: str, unit: str = "") -> Metric:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = Metric(name, doc, typ, unit)
        return family

    def gauge(self, name: str, doc: str, value: float, labels: Labels | None = None) -> None:
        self._family(name, doc, "gauge").add_sample(name, {**self._const, **(labels or {})}, float(value))

    def untyped(self, name: str, doc: str, value: float, labels: Labels | None = None) -> None:
        """A sample of unknown type (``untyped`` in the text format): a custom query's COUNTER column whose name
        lacks ``_total``, which promtool would refuse as a counter."""
        self._family(name, doc, "unknown").add_sample(name, {**self._const, **(labels or {})}, float(value))

    def counter(self, name: str, doc: str, value: float, labels: Labels | None = None) -> None:
        """``name`` must end in ``_total``; the family is named without it, as the OpenMetrics spec wants."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        family = self._family(name[: -len("_total")], doc, "counter")
        family.add_sample(name, {**self._const, **(labels or {})}, float(value))

    def histogram(self, name: str, doc: str, bounds: Sequence[float], cumulative: Sequence[float], total: float,
                  labels: Labels | None = None) -> None:
        """A histogram from cumulative bucket counts (len(bounds) + 1, the last being +Inf = count)."""
        if len(cumulative) != len(bounds) + 1:
            raise ValueError(f"histogram {name}: {len(cumulative)} counts for {len(bounds)} bounds")
        family = self._family(name, doc, "histogram")
        base = {**self._const, **(labels or {})}
        for bound, count in zip([*bounds, float("inf")], cumulative, strict=True):
            family.add_sample(f"{name}_bucket", {**base, "le": floatToGoString(bound)}, float(count))
        family.add_sample(f"{name}_count", base, float(cumulative[-1]))
        family.add_sample(f"{name}_sum", base, float(total))

    def info(self, name: str, doc: str, labels: Labels) -> None:
        """An ``*_info`` gauge with value 1 (the form promtool and Prometheus expect in text format)."""
        if not name.endswith("_info"):
            raise ValueError(f"info metric {name} must end in _info")
        self.gauge(name, doc, 1.0, labels)

    def families(self) -> tuple[Metric, ...]:
        return tuple(self._families.values())


def merge_families(results: Sequence[tuple[Metric, ...]], unique: bool = False) -> tuple[Metric, ...]:
    """Families of several runs (one per database) merged by name. ``unique``: a sample repeated with the same
    labels (a cluster-wide custom query run on every database) is kept once, the first run's."""
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for families in results:
        for family in families:
            existing = merged.get(family.name)
            if existing is None:
                existing = merged[family.name] = Metric(family.name, family.documentation, family.type,
                                                        family.unit)
            for sample in family.samples:
                if unique:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key in seen:
                        continue
                    seen.add(key)
                existing.samples.append(sample)
    return tuple(merged.values())
