"""A circuit breaker so a dead Redis costs one failed probe per reset period, not one timeout per request.

closed --(failure_threshold consecutive failures)--> open --(reset_timeout elapsed)--> half-open
half-open --(success_threshold successes)--> closed;  half-open --(any failure)--> open (timer restarts)

In half-open only ``half_open_max_calls`` probes run at once; a probe that never reports (its task was
cancelled) frees its slot after another reset_timeout, so the breaker cannot wedge half-open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_probe_started", "_probes", "_state", "_successes",
                 "failure_threshold", "half_open_max_calls", "opens", "reset_timeout", "success_threshold")

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 5.0, half_open_max_calls: int = 1,
                 success_threshold: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or success_threshold < 1 or reset_timeout <= 0:
            raise ValueError("breaker thresholds must be >= 1 and reset_timeout > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._probes = 0
        self._probe_started = 0.0
        self.opens = 0  # times the breaker opened, for the stats snapshot

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._state = BreakerState.HALF_OPEN
            self._probes = 0
            self._successes = 0
        return self._state

    def allow(self) -> bool:
        """May a call go to Redis now? In half-open, True reserves a probe slot: report its outcome."""
        if self._state is BreakerState.CLOSED:  # the hot path: one attribute test
            return True
        state = self.state
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._probes >= self.half_open_max_calls and now - self._probe_started < self.reset_timeout:
            return False
        if self._probes >= self.half_open_max_calls:
            self._probes = 0  # the earlier probes never reported
        self._probes += 1
        self._probe_started = now
        return True

    def record_success(self) -> None:
        if self._state is BreakerState.CLOSED:
            self._failures = 0
            return
        if self._state is BreakerState.HALF_OPEN:
            self._successes += 1
            self._probes = max(0, self._probes - 1)
            if self._successes >= self.success_threshold:
                self._state = BreakerState.CLOSED
                self._failures = 0

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trip()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._trip()

    def _trip(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._probes = 0
        self.opens += 1
