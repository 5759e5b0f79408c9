"""Key families: key counts, estimated memory and TTLs per cache family, from an incremental SCAN.

A full ``SCAN`` of 100k keys costs Redis 20-90 ms of CPU, during which it serves nobody (redis_exporter's
``-count-keys`` spends ~220 ms per scrape). Here the pass is spread over cycles: each cycle continues the cursor
kept in ``ctx.state`` for a small Redis-time budget (``key_scan_budget``), and the counts of a pass are published
only when it completes, so ``redis_key_family_keys`` always describes one whole pass.

Budget. The cost of our calls is measured on the server: the ``usec`` of ``scan`` and of ``memory|usage`` +
``pttl`` in INFO commandstats, read (with DBSIZE, one round trip) at the start of every cycle. The deltas since
the previous cycle, divided by the keys that cycle scanned and sampled, are the costs per scanned and per sampled
key. The next cycle plans 90% of ``key_scan_budget``: up to 20% of it for samples, the rest for ``budget / cost``
scanned keys (at least 100, at most ``key_scan_max_keys``), in SCAN calls of at most ``key_scan_count``. A cost
that rises is believed at once, one that falls only halfway; other clients' calls of the same commands inflate the
measure, which only makes us do less. Until measured, a key is assumed to cost 2 us.

Memory. For each family the first ``key_memory_samples`` keys a pass meets get ``MEMORY USAGE key`` (default
SAMPLES 5: nested values are sampled, never walked in full) and ``PTTL key``. SCAN visits keys in hash-bucket
order, which is unrelated to their names or sizes, so these keys are an effectively random sample. The family's
memory is extrapolated as ``keys in the family x mean MEMORY USAGE of its sample``.

SCAN may return a key twice if the hash table shrinks during a pass, and keys created or deleted during the
pass may or may not be counted: counts are exact for a keyspace that is stable during the pass.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled, RedisContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.common import is_forbidden, number, parse_fields, parse_info, raw_commands

log = logging.getLogger(__name__)

OTHER = "other"
INITIAL_COST = 2e-6  # seconds of Redis time per scanned key or sampled key, until measured
MIN_COST, MAX_COST = 5e-8, 2e-5  # clamp the measured cost (bounds the keys per cycle at both ends)
MIN_KEYS_PER_CYCLE = 100  # progress guarantee whatever the measured cost
MAX_SAMPLES_PER_CYCLE = 128
SAMPLE_SHARE = 0.2  # at most this share of the budget goes to MEMORY USAGE + PTTL samples
HEADROOM = 0.9  # plan for this share of the budget: the cost of the next cycle is a forecast
SCAN_COMMANDS = ("scan",)
SAMPLE_COMMANDS = ("memory|usage", "memory", "pttl")  # commandstats names (Redis 7+ and Redis 6)
TTL_QUANTILES = (0.5, 0.9)


class FamilyMatcher:
    """Classify keys by family pattern: a key prefix where ``*`` is one segment (no ``:``); no match is ``other``.

    Patterns are tried most specific first (most literal characters), as one compiled alternation.
    """

    def __init__(self, families: Mapping[str, Iterable[str]]) -> None:
        self.names = [*families, OTHER]
        entries = sorted(((pattern, name) for name, patterns in families.items() for pattern in patterns),
                         key=lambda e: (-len(e[0].replace("*", "")), e[0]))
        self._groups = {f"g{i}": name for i, (_pattern, name) in enumerate(entries)}
        alternatives = [b"(?P<g%d>%s)" % (i, b"[^:]*".join(re.escape(piece.encode()) for piece in pattern.split("*")))
                        for i, (pattern, _name) in enumerate(entries)]
        self._regex = re.compile(b"|".join(alternatives)) if alternatives else None

    def family(self, key: bytes | str) -> str:
        if isinstance(key, str):
            key = key.encode("utf-8", "surrogateescape")
        match = self._regex.match(key) if self._regex is not None else None
        return self._groups[match.lastgroup] if match and match.lastgroup else OTHER


@dataclass
class Pass:
    started: float = 0.0  # time of the pass's first SCAN
    cursor: int = 0
    cycles: int = 0
    keys_seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)  # sampled keys requested per family
    memory: dict[str, list[int]] = field(default_factory=dict)
    ttls: dict[str, list[float]] = field(default_factory=dict)  # seconds; -1: no TTL


@dataclass
class PassResult:
    finished: float
    duration: float
    cycles: int
    counts: dict[str, int]
    memory: dict[str, float]
    samples: dict[str, int]
    no_ttl_ratio: dict[str, float]
    ttl_quantiles: dict[str, dict[float, float]]


@dataclass
class ScanState:
    matcher: FamilyMatcher
    current: Pass = field(default_factory=Pass)
    last: PassResult | None = None
    passes: int = 0
    cost_per_key: float | None = None  # Redis seconds per scanned key (SCAN COUNT unit)
    cost_per_sample: float | None = None  # Redis seconds per sampled key (MEMORY USAGE + PTTL)
    prev_usec: tuple[float, float] | None = None
    prev_keys: int = 0
    prev_samples: int = 0
    last_cycle_redis_seconds: float = 0.0
    last_cycle_keys: int = 0  # keys SCAN returned in the last cycle
    last_cycle_count: int = 0  # sum of the COUNT hints of the last cycle (capped by key_scan_max_keys)
    redis_seconds_total: float = 0.0
    memory_usage: bool = True
    history: list[tuple[int, float]] = field(default_factory=list)  # (keys, measured Redis s) of recent cycles


class RedisKeyFamiliesCollector(Collector):
    name = "key_families"
    kind = "redis"

    async def collect(self, ctx: RedisContext, out: MetricSet) -> None:
        s = ctx.settings
        st: ScanState | None = ctx.state.get("scan")
        if st is None:
            st = ctx.state["scan"] = ScanState(FamilyMatcher(s.key_families))
        dbsize = await self._measure(ctx, st)
        keys, samples = self._allowance(st, s)
        await self._scan(ctx, st, keys, samples)
        export(st, dbsize, s.key_scan_budget, out)

    async def _measure(self, ctx: RedisContext, st: ScanState) -> int:
        """Read our commands' Redis time since the last cycle; learn the cost per key. Returns DBSIZE."""
        stats, dbsize = await raw_commands(ctx.client, ("INFO", "commandstats"), ("DBSIZE",))
        for reply in (stats, dbsize):
            if isinstance(reply, Exception):
                raise reply
        info = parse_info(stats)
        usec = (_usec(info, SCAN_COMMANDS), _usec(info, SAMPLE_COMMANDS))
        if st.prev_usec is not None:
            scan, sampling = ((now - before) * 1e-6 for now, before in zip(usec, st.prev_usec, strict=True))
            if scan < 0 or sampling < 0:  # server restarted or CONFIG RESETSTAT: the cursor means nothing now
                log.info("target %s: key families: server statistics were reset; restarting the SCAN pass",
                         ctx.target)
                st.current = Pass()
            else:
                st.last_cycle_redis_seconds = scan + sampling
                st.redis_seconds_total += scan + sampling
                st.history = [*st.history[-63:], (st.prev_keys, scan + sampling)]
                st.cost_per_key = _learn(st.cost_per_key, scan, st.prev_keys)
                st.cost_per_sample = _learn(st.cost_per_sample, sampling, st.prev_samples)
        st.prev_usec = usec
        return int(dbsize)

    @staticmethod
    def _allowance(st: ScanState, s: Any) -> tuple[int, int]:
        """Keys to scan and keys to sample this cycle, so that their forecast Redis time fits the budget."""
        budget = s.key_scan_budget * HEADROOM
        samples = min(MAX_SAMPLES_PER_CYCLE, int(budget * SAMPLE_SHARE / (st.cost_per_sample or INITIAL_COST)))
        keys = int((budget - samples * (st.cost_per_sample or INITIAL_COST)) / (st.cost_per_key or INITIAL_COST))
        return min(s.key_scan_max_keys, max(MIN_KEYS_PER_CYCLE, keys)), samples

    async def _scan(self, ctx: RedisContext, st: ScanState, allowance: int, max_samples: int) -> None:
        s = ctx.settings
        p = st.current
        matcher = st.matcher
        scanned = requested = returned = 0
        pending: list[tuple[str, bytes]] = []
        done = False
        if p.cycles == 0:
            p.started = time.time()
        while scanned < allowance:
            count = max(10, min(s.key_scan_count, allowance - scanned))
            (reply,) = await raw_commands(ctx.client, ("SCAN", p.cursor, "COUNT", count))
            if isinstance(reply, Exception):
                if is_forbidden(reply):
                    raise CollectorDisabled(f"SCAN is not available on this server: {reply}")
                raise reply
            requested += count
            cursor, keys = int(reply[0]), reply[1]
            returned += len(keys)
            # Budget units: COUNT (empty buckets cost Redis time too), or the keys returned if more.
            scanned += max(len(keys), count)
            p.keys_seen += len(keys)
            counts = p.counts
            for key in keys:
                family = matcher.family(key)
                counts[family] = counts.get(family, 0) + 1
                if p.reserved.get(family, 0) < s.key_memory_samples and len(pending) < max_samples:
                    p.reserved[family] = p.reserved.get(family, 0) + 1
                    pending.append((family, key))
            p.cursor = cursor
            if cursor == 0:
                done = True
                break
        p.cycles += 1
        if pending:
            await self._sample(ctx, st, p, pending)
        st.prev_keys = scanned
        st.prev_samples = len(pending)
        st.last_cycle_keys = returned
        st.last_cycle_count = requested
        if done:
            st.last = finish(p, matcher.names)
            st.passes += 1
            st.current = Pass()

    async def _sample(self, ctx: RedisContext, st: ScanState, p: Pass, pending: list[tuple[str, bytes]]) -> None:
        commands: list[tuple[Any, ...]] = []
        with_memory = st.memory_usage
        for _family, key in pending:
            if with_memory:
                commands.append(("MEMORY", "USAGE", key))
            commands.append(("PTTL", key))
        replies = iter(await raw_commands(ctx.client, *commands))
        for family, _key in pending:
            usage = next(replies) if with_memory else None
            ttl = next(replies)
            if isinstance(usage, Exception):
                if not is_forbidden(usage):
                    raise usage
                if st.memory_usage:
                    log.warning("target %s: MEMORY USAGE is not available (%s); key families are counted without "
                                "memory estimates", ctx.target, usage)
                st.memory_usage = False
                usage = None
            if isinstance(ttl, Exception):
                raise ttl
            if ttl == -2:  # expired or deleted since SCAN returned it: let a later key take its place
                p.reserved[family] -= 1
                continue
            if isinstance(usage, int):
                p.memory.setdefault(family, []).append(usage)
            p.ttls.setdefault(family, []).append(-1.0 if ttl < 0 else ttl / 1000.0)


def _usec(info: dict[str, str], commands: Iterable[str]) -> float:
    return sum(number(parse_fields(info.get(f"cmdstat_{c}", "")).get("usec")) or 0.0 for c in commands)


def _learn(estimate: float | None, seconds: float, units: int) -> float | None:
    """Update a cost estimate: rise at once (protect the server), fall halfway (others' calls add noise)."""
    if units <= 0:
        return estimate
    sample = min(MAX_COST, max(MIN_COST, seconds / units))
    return sample if estimate is None or sample > estimate else 0.5 * estimate + 0.5 * sample


def finish(p: Pass, names: list[str]) -> PassResult:
    now = time.time()
    counts = {name: p.counts.get(name, 0) for name in names}
    memory: dict[str, float] = {}
    samples: dict[str, int] = {}
    no_ttl: dict[str, float] = {}
    quantiles: dict[str, dict[float, float]] = {}
    for name in names:
        usages = p.memory.get(name, [])
        samples[name] = len(usages)
        if usages:
            memory[name] = counts[name] * sum(usages) / len(usages)
        elif counts[name] == 0:
            memory[name] = 0.0
        ttls = p.ttls.get(name, [])
        if ttls:
            no_ttl[name] = sum(1 for t in ttls if t < 0) / len(ttls)
            with_ttl = sorted(t for t in ttls if t >= 0)
            if with_ttl:
                quantiles[name] = {q: quantile(with_ttl, q) for q in TTL_QUANTILES}
    return PassResult(now, now - p.started, p.cycles, counts, memory, samples, no_ttl, quantiles)


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty list."""
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def export(st: ScanState, dbsize: int, budget: float, out: MetricSet) -> None:
    last = st.last
    if last is not None:
        for name, count in last.counts.items():
            labels = {"family": name}
            out.gauge("redis_key_family_keys", "Keys per family in the last complete SCAN pass.", count, labels)
            if name in last.memory:
                out.gauge("redis_key_family_memory_bytes", "Estimated memory per family: keys x mean MEMORY USAGE "
                          "of the family's sampled keys, last complete pass.", last.memory[name], labels)
            out.gauge("redis_key_family_memory_sampled_keys", "Keys of the family whose MEMORY USAGE was sampled in "
                      "the last complete pass.", last.samples[name], labels)
            if name in last.no_ttl_ratio:
                out.gauge("redis_key_family_no_ttl_ratio", "Share of the family's sampled keys without a TTL.",
                          last.no_ttl_ratio[name], labels)
            for q, value in last.ttl_quantiles.get(name, {}).items():
                out.gauge("redis_key_family_ttl_seconds", "Remaining TTL of the family's sampled keys that have one "
                          "(percentiles of the sample).", value, {**labels, "percentile": f"{q * 100:g}"})
        out.gauge("redis_key_family_scan_duration_seconds", "Wall time of the last complete SCAN pass.", last.duration)
        out.gauge("redis_key_family_scan_cycles", "Collection cycles the last complete SCAN pass took.", last.cycles)
        out.gauge("redis_key_family_scan_last_pass_timestamp_seconds", "Unix time the last SCAN pass completed.",
                  last.finished)
    out.counter("redis_key_family_scan_passes_total", "Complete SCAN passes over the keyspace.", st.passes)
    seen = st.current.keys_seen
    out.gauge("redis_key_family_scan_progress_ratio", "Keys seen by the current pass / DBSIZE (approximate).",
              min(1.0, seen / dbsize) if dbsize else 1.0)
    out.gauge("redis_key_family_scan_cycle_keys", "Keys SCAN returned in this cycle (COUNT is a hint: a few more "
              "than the COUNT asked for when hash buckets hold several keys).",
              st.last_cycle_keys)
    out.gauge("redis_key_family_scan_cycle_redis_seconds", "Redis time of the previous cycle's SCAN, MEMORY "
              "USAGE and PTTL calls (INFO commandstats delta; an upper bound: other clients' calls count too).",
              st.last_cycle_redis_seconds)
    out.counter("redis_key_family_scan_redis_seconds_total", "Redis time spent in SCAN, MEMORY USAGE and PTTL calls "
                "while this collector ran (upper bound, see redis_key_family_scan_cycle_redis_seconds).",
                st.redis_seconds_total)
    out.gauge("redis_key_family_scan_budget_seconds", "The configured Redis time budget per cycle (key_scan_budget).",
              budget)
