"""Bounded in-memory history of the series the alert rules read.

Only metric names the rules select are kept, each for its own window (largest range + offset used with that name,
plus the lookback delta), so a large catalog costs memory only for what the rules need. Timestamps are integer
milliseconds, as in Prometheus, so the evaluator's arithmetic is bit-for-bit that of Prometheus.

Per series the samples live in two parallel ``array`` columns (timestamps, values) instead of a deque of tuples:
16 bytes a sample, and ``bisect`` finds the range boundaries without walking the deque.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rules imports the evaluator, which imports this module
    from pgwatch_cpa.alerts.rules import RuleSet

# A quiet NaN with a payload of our own marks a series as stale (Prometheus uses a signalling NaN; a quiet one
# survives every float conversion). Only values that are NaN are compared bit-wise, so the check is cheap.
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000BAD))[0]
_STALE_BITS = struct.pack("<d", STALE)

LabelKey = tuple[tuple[str, str], ...]


def is_stale(value: float) -> bool:
    return value != value and struct.pack("<d", value) == _STALE_BITS


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """Canonical, hashable and Prometheus-ordered (labels.Compare) form of a label set."""
    return tuple(sorted(labels.items()))


class Series:
    """One series: its labels (``__name__`` included) and its samples, oldest first."""

    __slots__ = ("key", "labels", "n_stale", "seq", "ts", "vals")

    def __init__(self, labels: dict[str, str], key: LabelKey, seq: int = 0) -> None:
        self.labels = labels
        self.key = key
        self.seq = seq  # creation order: the order Prometheus's head returns series in (its series refs)
        self.ts = array("q")
        self.vals = array("d")
        self.n_stale = 0  # stale markers currently held; 0 lets range reads skip the NaN filter

    def append(self, t_ms: int, value: float) -> bool:
        if self.ts and t_ms <= self.ts[-1]:
            return False  # out of order or duplicate: Prometheus rejects it too
        if is_stale(value):
            if not self.vals or is_stale(self.vals[-1]):
                return False  # nothing to mark
            self.n_stale += 1
        self.ts.append(t_ms)
        self.vals.append(value)
        return True

    def trim(self, cutoff_ms: int) -> None:
        ts = self.ts
        if not ts or ts[0] >= cutoff_ms:
            return
        k = bisect_left(ts, cutoff_ms)
        if self.n_stale:
            self.n_stale -= sum(1 for v in self.vals[:k] if is_stale(v))
        del ts[:k]
        del self.vals[:k]


class _Family:
    """All series of one metric name in creation order, as a list rebuilt only when the set of series changes.

    Creation order (not label order) is what Prometheus's head index returns for a selector, and float sums
    depend on the order of their terms, so keeping it makes sum() agree with Prometheus to the last bit.
    """

    __slots__ = ("by_key", "sorted", "version", "window_ms")

    def __init__(self, window_ms: int) -> None:
        self.by_key: dict[LabelKey, Series] = {}
        self.window_ms = window_ms
        self.version = 0
        self.sorted: list[Series] | None = []

    def view(self) -> list[Series]:
        if self.sorted is None:
            self.sorted = list(self.by_key.values())
        return self.sorted


class History:
    """Series history fed from snapshots.

    ``windows`` maps each metric name to keep onto the seconds of history it needs (beyond the newest sample);
    ``None`` keeps every name for ``default_window`` seconds (needed when a rule selects without a metric name).
    """

    def __init__(self, windows: Mapping[str, float] | None = None, default_window: float = 3900.0) -> None:
        self._windows = None if windows is None else {n: int(w * 1000) for n, w in windows.items()}
        self._default_ms = int(default_window * 1000)
        self._families: dict[str, _Family] = {}
        self.newest_ms: int | None = None
        self.version = 0  # bumped whenever any family gains or loses a series
        self._seq = 0

    @classmethod
    def for_rules(cls, rules: RuleSet, lookback: float = 300.0) -> History:
        """A history keeping exactly what ``rules`` read; see RuleSet.windows()."""
        windows = rules.windows()
        if windows is None:
            return cls(None, default_window=rules.max_window() + lookback)
        return cls({n: w + lookback for n, w in windows.items()})

    # -- writing -------------------------------------------------------------------------------------------

    def ingest(self, samples: Iterable[tuple[str, Mapping[str, str], float]], ts: float,
               *, mark_stale: bool = True) -> None:
        """Add one collection's samples, all stamped ``ts`` (seconds).

        ``samples`` is the complete current set (SnapshotStore.samples()): a kept series missing from it gets a
        stale marker, as Prometheus writes one when a series disappears from a scrape.
        """
        t_ms = round(ts * 1000)
        seen: set[int] = set()
        for name, labels, value in samples:
            series = self._series(name, labels)
            if series is not None and series.append(t_ms, float(value)):
                seen.add(id(series))
        if mark_stale:
            for family in self._families.values():
                for series in family.by_key.values():
                    if id(series) not in seen:
                        series.append(t_ms, STALE)
        self._advance(t_ms)

    def append(self, name: str, labels: Mapping[str, str], ts: float, value: float | None) -> None:
        """Add one sample (``None`` = stale marker) without touching other series; tests feed data this way."""
        series = self._series(name, labels)
        if series is not None:
            series.append(round(ts * 1000), STALE if value is None else float(value))

    def advance(self, ts: float) -> None:
        """Trim to the windows as of ``ts`` after a batch of append() calls."""
        self._advance(round(ts * 1000))

    def _series(self, name: str, labels: Mapping[str, str]) -> Series | None:
        family = self._families.get(name)
        if family is None:
            window = self._window_ms(name)
            if window is None:
                return None
            family = self._families[name] = _Family(window)
        full = {**labels, "__name__": name}
        key = label_key(full)
        series = family.by_key.get(key)
        if series is None:
            self._seq += 1
            series = family.by_key[key] = Series(full, key, self._seq)
            self._changed(family)
        return series

    def _window_ms(self, name: str) -> int | None:
        if self._windows is None:
            return self._default_ms
        return self._windows.get(name)

    def _changed(self, family: _Family) -> None:
        family.sorted = None
        family.version += 1
        self.version += 1

    def _advance(self, t_ms: int) -> None:
        if self.newest_ms is None or t_ms > self.newest_ms:
            self.newest_ms = t_ms
        for family in self._families.values():
            cutoff = self.newest_ms - family.window_ms
            dead = []
            for key, series in family.by_key.items():
                series.trim(cutoff)
                if not series.ts or (series.n_stale == len(series.ts)):
                    dead.append(key)
            for key in dead:
                del family.by_key[key]
            if dead:
                self._changed(family)

    def rewindow(self, other: History) -> None:
        """Keep from now on what ``other`` (a new rule set's history) keeps: the series of names both keep stay
        with their samples, under the new window; names no longer read are dropped."""
        self._windows, self._default_ms = other._windows, other._default_ms
        for name in list(self._families):
            window = self._window_ms(name)
            if window is None:
                del self._families[name]
                self.version += 1
            else:
                self._families[name].window_ms = window

    # -- reading -------------------------------------------------------------------------------------------

    def family(self, name: str) -> tuple[int, list[Series]]:
        """(version, series in creation order) of one metric name; the version changes with the set of series."""
        family = self._families.get(name)
        if family is None:
            return -1, []
        return family.version, family.view()

    def names(self) -> list[str]:
        return sorted(self._families)

    def __len__(self) -> int:
        return sum(len(f.by_key) for f in self._families.values())

    def samples_count(self) -> int:
        return sum(len(s.ts) for f in self._families.values() for s in f.by_key.values())

