"""The CPA application's Redis cache: tenant-scoped, generation-invalidated, stampede-safe, fail-open.

Hit path: one Redis round trip (GET). Generations are part of every key; they are read with one MGET and kept
in process for ``generation_ttl`` seconds (default 1 s). Trade-off, and the staleness bound:

* generation_ttl > 0: after an invalidation made by ANOTHER process, this process may keep serving the
  previous generation's entries for at most generation_ttl seconds. The invalidating process itself sees its
  own invalidation immediately (the INCR result replaces its cached generation). Costs one MGET per org and
  family per generation_ttl.
* generation_ttl = 0: strict; every lookup reads the generations first (MGET + GET, two round trips).

Generation counters have no TTL and must never be evicted (a lost counter restarts at the current time in ms,
so it cannot fall back onto a value old entries were written under; still, run Redis with a ``volatile-*``
maxmemory-policy: every cache entry has a TTL, counters do not). The service reads the policy and warns once
if it is ``allkeys-*``.

Fail-open: a Redis error, timeout (socket_timeout on the client, not asyncio.wait_for) or an open circuit
breaker never reaches the caller: get() returns the default, get_or_load() returns the loader's value, and
the event is counted. Loader exceptions do reach the caller; they are not cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from pgwatch_cpa.cpa.cache import keys as k
from pgwatch_cpa.cpa.cache import stats as st
from pgwatch_cpa.cpa.cache.breaker import CircuitBreaker
from pgwatch_cpa.cpa.cache.families import Family
from pgwatch_cpa.cpa.cache.invalidation import rule_for
from pgwatch_cpa.cpa.cache.metrics import CacheCollector, CacheStats, FamilyStats
from pgwatch_cpa.cpa.cache.pool import CountingBlockingConnectionPool, PoolExhaustedError
from pgwatch_cpa.cpa.cache.serializers import SerializationError, dump_envelope, load_envelope
from pgwatch_cpa.cpa.cache.singleflight import SingleFlight

log = logging.getLogger(__name__)
T = TypeVar("T")

_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_HIT, _MISS, _STALE, _ERROR = "hit", "miss", "stale", "error"
_MAX_LOCAL_GENERATIONS = 100_000
_MAX_PENDING_BUMPS = 100_000
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    app_instance: str
    max_connections: int = 50
    pool_timeout: float = 0.2  # seconds to wait for a free pooled connection (then: exhausted, fail open)
    socket_timeout: float = 0.25  # per command; a slow Redis becomes a fail-open, not a slow request
    socket_connect_timeout: float = 0.25
    generation_ttl: float = 1.0  # see module docstring; 0 = strict
    jitter: float = 0.10  # TTLs are multiplied by uniform(1 - jitter, 1 + jitter)
    stats_interval: float = 5.0  # snapshot publish period; the snapshot key lives 3x this
    breaker_failures: int = 5
    breaker_reset: float = 5.0
    lock_ttl: float = 30.0  # cross-process load lock (families with lock=True)
    lock_wait: float = 10.0  # how long a process waits for another's load before loading itself
    lock_poll: float = 0.05
    max_value_bytes: int = 4 * 1024 * 1024  # larger values are returned but not cached

    def __post_init__(self) -> None:
        st.validate_instance(self.app_instance)
        if self.generation_ttl < 0 or not 0 <= self.jitter < 1 or self.stats_interval <= 0:
            raise ValueError("generation_ttl >= 0, 0 <= jitter < 1 and stats_interval > 0 are required")


class _Start:
    """What create() returns: await it for a started service, or use it with ``async with``."""

    def __init__(self, factory: Callable[[], Awaitable[CacheService]]) -> None:
        self._factory = factory
        self._service: CacheService | None = None

    def __await__(self) -> Generator[Any, None, CacheService]:
        return self._factory().__await__()

    async def __aenter__(self) -> CacheService:
        self._service = await self._factory()
        return self._service

    async def __aexit__(self, *exc: object) -> None:
        if self._service is not None:
            await self._service.close()


class CacheService:
    def __init__(self, redis: Redis, pool: CountingBlockingConnectionPool, config: CacheConfig,
                 registry: CollectorRegistry | None = None, app_stats: st.AppStatsProvider | None = None) -> None:
        self.redis = redis
        self.app_stats = app_stats  # the application's PostgreSQL pool and query-layer sections of the snapshot
        self._app_stats_failed = False
        self.pool = pool
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset)
        self.stats = CacheStats()
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collector = CacheCollector(self.stats, pool, lambda: self.breaker.state.value)
        self.registry.register(self._collector)
        self._gens: dict[str, tuple[int, float]] = {}  # generation key -> (value, local expiry)
        self._gen_ttl = config.generation_ttl
        self._flights = SingleFlight()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: set[str] = set()
        self._pending_bumps: set[str] = set()
        self._replaying = False
        self._unlock = redis.register_script(_UNLOCK_LUA)
        self._publisher: asyncio.Task[None] | None = None
        self._started_at = time.time()
        self.maxmemory_policy: str | None = None
        self._closed = False
        self._stop = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, url: str, *, app_instance: str, registry: CollectorRegistry | None = None,
               app_stats: st.AppStatsProvider | None = None, **options: Any) -> _Start:
        """``svc = await CacheService.create(url, app_instance="web-1")`` or ``async with ... as svc``.

        ``app_stats`` returns the application's own snapshot sections (``pg_pool``, ``query_layer``; see stats.py
        and pgwatch_cpa.cpa.query_stats.app_sections), published with every snapshot. ``options`` are CacheConfig
        fields. Creating never fails because Redis is down: the service starts
        failing open and recovers by itself.
        """
        unknown = set(options) - {f.name for f in fields(CacheConfig)}
        if unknown:
            raise TypeError(f"unknown CacheService options: {', '.join(sorted(unknown))}")
        config = CacheConfig(app_instance=app_instance, **options)

        async def factory() -> CacheService:
            service = cls(*_client(url, config), config, registry, app_stats)
            await service.start()
            return service

        return _Start(factory)

    async def start(self) -> None:
        await self._check_policy()
        self._publisher = asyncio.create_task(self._publish_loop(), name=f"cpa-cache-stats:{self.config.app_instance}")

    async def close(self, unpublish: bool = True) -> None:
        """Stop background work and the client. unpublish=False leaves the snapshot to expire (as a crash would)."""
        if self._closed:
            return
        self._closed = True
        # the event, not only cancel(): redis-py 8.1 can swallow a cancel that lands inside pipeline.execute()
        self._stop.set()
        tasks = [t for t in (self._publisher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if unpublish:
            await self._unpublish()
        self.registry.unregister(self._collector)
        await self.redis.aclose()

    async def __aenter__(self) -> CacheService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ reads

    async def get(self, key: k.CacheKey, default: Any = None) -> Any:
        """The cached value, or ``default`` on a miss or any Redis trouble (counted as error + fail-open)."""
        fs = self.stats.families[key.family.name]
        result, value, _ = await self._lookup(key, fs)
        fs.requests[result] += 1
        if result == _ERROR:
            fs.fail_opens += 1
        return value if result in (_HIT, _STALE) else default

    async def get_or_load(self, key: k.CacheKey, loader: Callable[[], Awaitable[T]],
                          ttl: float | None = None) -> T:
        """Cached value, else ``await loader()`` stored with the family's TTL (or ``ttl``).

        Concurrent calls for one key in this process share one lookup and one load. Returned objects may be
        shared between those callers: treat them as read-only.
        """
        fs = self.stats.families[key.family.name]
        (value, result, fail_open), _ = await self._flights.do(
            key.ident, lambda: self._get_or_load(key, loader, ttl, fs))
        fs.requests[result] += 1
        if fail_open:
            fs.fail_opens += 1
        return value

    async def set(self, key: k.CacheKey, value: Any, ttl: float | None = None) -> bool:
        """Store a value; False (never an exception) if Redis is unavailable or the value is not cacheable."""
        if not self.breaker.allow():
            return False
        try:
            rkey = await self._redis_key(key)
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return False
        # _store's None (Redis unavailable) is reported as False, as documented
        return await self._store(key, rkey, value, ttl, self.stats.families[key.family.name]) is True

    async def _lookup(self, key: k.CacheKey, fs: FamilyStats) -> tuple[str, Any, str]:
        """(result, value, redis key); never raises for Redis trouble."""
        if not self.breaker.allow():
            return _ERROR, None, ""
        start = time.perf_counter()
        try:
            rkey = await self._redis_key(key)
            raw = await self.redis.get(rkey)
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return _ERROR, None, ""
        self.breaker.record_success()
        if self._pending_bumps and not self._replaying:
            self._spawn(self._replay_bumps())
        result, value = self._decode(key, raw, fs)
        fs.latency.observe(time.perf_counter() - start)
        return result, value, rkey

    def _decode(self, key: k.CacheKey, raw: bytes | str | None, fs: FamilyStats) -> tuple[str, Any]:
        if raw is None:
            return _MISS, None
        try:
            org_id, soft_expiry, value = load_envelope(raw)
        except SerializationError as exc:
            log.warning("unreadable %s cache value treated as a miss: %s", key.family.name, exc)
            return _MISS, None
        if org_id != key.org_id:
            fs.tenant_mismatches += 1  # never serve another tenant's data, whatever put it there
            log.warning("%s cache value with a foreign org id treated as a miss", key.family.name)
            return _MISS, None
        if soft_expiry and time.time() >= soft_expiry:
            return _STALE, value
        return _HIT, value

    async def _get_or_load(self, key: k.CacheKey, loader: Callable[[], Awaitable[Any]], ttl: float | None,
                           fs: FamilyStats) -> tuple[Any, str, bool]:
        """(value, result, failed open) for one flight."""
        result, value, rkey = await self._lookup(key, fs)
        if result == _HIT:
            return value, _HIT, False
        if result == _STALE:
            self._refresh_later(key, rkey, loader, ttl, fs)
            return value, _STALE, False
        if result == _ERROR:
            return await self._load(loader, fs), _ERROR, True
        if key.family.lock:
            value, stored = await self._load_locked(key, rkey, loader, ttl, fs)
        else:
            value = await self._load(loader, fs)
            stored = await self._store(key, rkey, value, ttl, fs)
        return value, _MISS, stored is None

    async def _load(self, loader: Callable[[], Awaitable[T]], fs: FamilyStats) -> T:
        fs.loads += 1
        try:
            return await loader()
        except Exception:
            fs.load_errors += 1
            raise

    # ------------------------------------------------------------ writes

    async def _store(self, key: k.CacheKey, rkey: str, value: Any, ttl: float | None,
                     fs: FamilyStats) -> bool | None:
        """True stored, False not cacheable (too big, unsupported type), None Redis unavailable (fail-open)."""
        family = key.family
        base = float(ttl if ttl is not None else family.ttl)
        factor = 1.0 + random.uniform(-self.config.jitter, self.config.jitter)  # spreads expiries
        soft = time.time() + base * factor if family.stale_grace else 0.0
        try:
            data = dump_envelope(key.org_id, value, soft)
        except (SerializationError, TypeError) as exc:
            log.warning("%s value not cached: %s", family.name, exc)
            return False
        if len(data) > self.config.max_value_bytes:
            log.warning("%s value of %d bytes not cached (limit %d)", family.name, len(data),
                        self.config.max_value_bytes)
            return False
        fs.value_bytes.observe(len(data))
        if not self.breaker.allow():
            return None
        try:
            await self.redis.set(rkey, data, px=max(1, int((base + family.stale_grace) * factor * 1000)))
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        self.breaker.record_success()
        return True

    async def delete(self, key: k.CacheKey) -> bool:
        """UNLINK one exact key at the current (authoritative, not locally cached) generations."""
        if not self.breaker.allow():
            return False
        try:
            og, fg = await self.redis.mget(key.org_gen_key, key.family_gen_key)
            if og is not None and fg is not None:
                await self.redis.unlink(key.redis_key(int(og), int(fg)))
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            self._defer_bumps([key.family_gen_key])  # the coarser invalidation is still correct
            return False
        self.breaker.record_success()
        self.stats.invalidations["key"] += 1
        return True

    # ------------------------------------------------------------ generations

    async def _redis_key(self, key: k.CacheKey) -> str:
        og_key, fg_key = key.org_gen_key, key.family_gen_key
        if self._gen_ttl:
            now = time.monotonic()
            og, fg = self._gens.get(og_key), self._gens.get(fg_key)
            if og is not None and fg is not None and og[1] > now and fg[1] > now:
                return key.redis_key(og[0], fg[0])
        og_v, fg_v = await self._fetch_generations(og_key, fg_key)
        return key.redis_key(og_v, fg_v)

    async def _fetch_generations(self, *gen_keys: str) -> list[int]:
        values = await self.redis.mget(*gen_keys)
        if None in values:
            # A missing counter starts at the current time in ms, so a counter lost to eviction or FLUSH can
            # never restart at a value entries still in Redis were written under.
            pipe = self.redis.pipeline(transaction=False)
            for key, value in zip(gen_keys, values, strict=True):
                if value is None:
                    pipe.set(key, time.time_ns() // 1_000_000, nx=True)
            pipe.mget(*gen_keys)
            values = (await pipe.execute())[-1]
        gens = [_generation(v) for v in values]
        self._remember(zip(gen_keys, gens, strict=True))
        return gens

    def _remember(self, pairs: Any) -> None:
        if not self._gen_ttl:
            return
        if len(self._gens) > _MAX_LOCAL_GENERATIONS:
            self._gens.clear()
        expiry = time.monotonic() + self._gen_ttl
        for key, value in pairs:
            old = self._gens.get(key)
            # generations only grow: a slower MGET must not replace a newer INCR result
            self._gens[key] = (max(value, old[0]) if old else value, expiry)

    # ------------------------------------------------------------ invalidation

    async def invalidate_org(self, org_id: str) -> bool:
        """Everything cached for one org, with one INCR."""
        return await self._bump([k.org_gen_key(org_id)], "org")

    async def invalidate_family(self, org_id: str, family: Family) -> bool:
        """One family of one org, with one INCR."""
        return await self._bump([k.family_gen_key(org_id, family)], "family")

    async def invalidate(self, event: str, org_id: str, **ids: str) -> bool:
        """Apply the invalidation table (invalidation.EVENTS) for ``event``; ids name exact keys (user_id=...)."""
        rule = rule_for(event)
        gen_keys = [k.family_gen_key(org_id, fam) for fam in rule.families]
        if rule.org_wide:
            gen_keys.append(k.org_gen_key(org_id))
        exact = []
        for spec in rule.exact:
            if ids.get(spec.param):
                exact.append(spec.build(org_id, ids[spec.param]))
            else:
                gen_keys.append(k.family_gen_key(org_id, spec.family))
        ok = await self._bump(gen_keys, "event") if gen_keys else True
        for key in exact:
            ok = await self.delete(key) and ok
        return ok

    async def _bump(self, gen_keys: list[str], kind: str) -> bool:
        if not self.breaker.allow():
            self._defer_bumps(gen_keys)
            return False
        # SET NX first so a counter that does not exist starts at the current time in ms, like a read would
        # start it (see _fetch_generations): one round trip, two commands per counter, whatever the key count.
        seed = time.time_ns() // 1_000_000
        pipe = self.redis.pipeline(transaction=False)
        for key in gen_keys:
            pipe.set(key, seed, nx=True)
            pipe.incr(key)
        try:
            values = (await pipe.execute())[1::2]
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            self._defer_bumps(gen_keys)
            return False
        self.breaker.record_success()
        self._remember(zip(gen_keys, values, strict=True))  # read-your-invalidations in this process
        self.stats.invalidations[kind] += 1
        return True

    def _defer_bumps(self, gen_keys: list[str]) -> None:
        """Remember failed invalidations and replay them once Redis is back (its data may have survived)."""
        self.stats.invalidations["failed"] += 1
        for key in gen_keys:
            self._gens.pop(key, None)
        if len(self._pending_bumps) < _MAX_PENDING_BUMPS:
            self._pending_bumps.update(gen_keys)
        else:
            log.error("too many failed cache invalidations pending; some are dropped until Redis is back")

    async def _replay_bumps(self) -> None:
        if self._replaying:
            return
        self._replaying = True
        try:
            pending, self._pending_bumps = list(self._pending_bumps), set()
            if pending and await self._bump(pending, "event"):
                log.info("replayed %d cache invalidations that failed while Redis was unavailable", len(pending))
        finally:
            self._replaying = False

    # ------------------------------------------------------------ stampede protection

    def _refresh_later(self, key: k.CacheKey, rkey: str, loader: Callable[[], Awaitable[Any]],
                       ttl: float | None, fs: FamilyStats) -> None:
        """Serve-stale: one background refresh per key per process while callers get the stale value."""
        if key.ident in self._refreshing:
            return
        self._refreshing.add(key.ident)

        async def refresh() -> None:
            try:
                value = await self._load(loader, fs)
                await self._store(key, rkey, value, ttl, fs)
            except Exception as exc:  # task boundary: the stale value keeps being served until the hard TTL
                log.warning("background refresh of %s failed: %s", key.family.name, exc)
            finally:
                self._refreshing.discard(key.ident)

        self._spawn(refresh())

    async def _load_locked(self, key: k.CacheKey, rkey: str, loader: Callable[[], Awaitable[Any]],
                           ttl: float | None, fs: FamilyStats) -> tuple[Any, bool | None]:
        """Cross-process stampede guard for expensive families: SET NX PX lock, token-checked release."""
        lock_key = k.LOCK_PREFIX + rkey[len(k.DATA_PREFIX):]
        token = secrets.token_hex(16)
        try:
            acquired = await self.redis.set(lock_key, token, nx=True, px=int(self.config.lock_ttl * 1000))
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return await self._load(loader, fs), None
        if not acquired:
            found, value = await self._wait_for_other(key, rkey, lock_key, fs)
            if found:
                return value, True
        try:
            value = await self._load(loader, fs)
            return value, await self._store(key, rkey, value, ttl, fs)
        finally:
            if acquired:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await self._unlock(keys=[lock_key], args=[token])

    async def _wait_for_other(self, key: k.CacheKey, rkey: str, lock_key: str,
                              fs: FamilyStats) -> tuple[bool, Any]:
        deadline = time.monotonic() + self.config.lock_wait
        while time.monotonic() < deadline:
            await asyncio.sleep(self.config.lock_poll)
            try:
                raw, holder = await self.redis.mget(rkey, lock_key)
            except _REDIS_ERRORS as exc:
                self._failed(exc)
                return False, None
            result, value = self._decode(key, raw, fs)
            if result in (_HIT, _STALE):
                return True, value
            if holder is None:  # the holder finished without storing, or its lock expired
                return False, None
        return False, None

    # ------------------------------------------------------------ failures

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, PoolExhaustedError | ResponseError):
            log.debug("redis command failed (not an availability problem): %s", exc)
            return  # a full pool or a bad command is not a dead Redis: do not trip the breaker
        before = self.breaker.state
        self.breaker.record_failure()
        if before is not self.breaker.state:
            log.warning("redis unavailable (%s: %s); cache failing open for %.1fs before probing",
                        type(exc).__name__, exc, self.breaker.reset_timeout)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ stats publishing

    def snapshot(self) -> dict[str, Any]:
        return st.build_snapshot(
            stats=self.stats, pool=self.pool, app_instance=self.config.app_instance, pid=os.getpid(),
            started_at=self._started_at, published_at=time.time(), interval=self.config.stats_interval,
            breaker_state=self.breaker.state.value, breaker_opens=self.breaker.opens,
            maxmemory_policy=self.maxmemory_policy, app=self._app_sections())

    def _app_sections(self) -> st.AppSections | None:
        """The application's sections, or none if its provider fails (the cache's own statistics still go out)."""
        if self.app_stats is None:
            return None
        try:
            return self.app_stats()
        except Exception:  # a broken provider must not silence the snapshot; said once, not every period
            if not self._app_stats_failed:
                self._app_stats_failed = True
                log.exception("the application's statistics provider failed; publishing without its sections")
            return None

    async def publish_stats(self) -> bool:
        """Write the snapshot and refresh the instance index; False if Redis is unavailable."""
        if not self.breaker.allow():
            return False
        interval = self.config.stats_interval
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(st.instance_key(self.config.app_instance), st.dump_snapshot(self.snapshot()),
                 px=int(interval * st.TTL_PERIODS * 1000))
        pipe.zadd(st.INDEX_KEY, {self.config.app_instance: now})
        pipe.zremrangebyscore(st.INDEX_KEY, "-inf", now - interval * st.PRUNE_PERIODS)
        try:
            await pipe.execute()
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return False
        self.breaker.record_success()
        return True

    async def _publish_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.maxmemory_policy is None:
                    await self._check_policy()
                if await self.publish_stats() and self._pending_bumps:
                    await self._replay_bumps()
            except Exception:  # task boundary: publishing must never stop for good
                log.exception("cache stats publishing failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.stats_interval)

    async def _unpublish(self) -> None:
        if not self.breaker.allow():
            return
        with contextlib.suppress(*_REDIS_ERRORS):
            pipe = self.redis.pipeline(transaction=False)
            pipe.unlink(st.instance_key(self.config.app_instance))
            pipe.zrem(st.INDEX_KEY, self.config.app_instance)
            await pipe.execute()

    async def _check_policy(self) -> None:
        """Read maxmemory-policy (CONFIG GET, else INFO memory, as managed Redis may rename CONFIG)."""
        policy = None
        with contextlib.suppress(*_REDIS_ERRORS):
            try:
                policy = _text(next(iter((await self.redis.config_get("maxmemory-policy")).values()), None))
            except ResponseError:
                policy = _text((await self.redis.info("memory")).get("maxmemory_policy"))
        if policy is None:
            return
        self.maxmemory_policy = policy
        if policy.startswith("allkeys-"):
            log.warning("Redis maxmemory-policy is %s: generation counters (no TTL) may be evicted; use a "
                        "volatile-* policy (every cache entry has a TTL)", policy)


def _generation(reply: bytes | str | None) -> int:
    """A generation counter from a GET/MGET reply (bytes: the client does not decode; int() reads str alike)."""
    if reply is None:  # only if the counter vanished between SET NX and MGET; a TypeError, as int(None) raised
        raise TypeError("generation counter missing from the reply")
    return int(reply)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _client(url: str, config: CacheConfig) -> tuple[Redis, CountingBlockingConnectionPool]:
    # One immediate retry on a fresh connection absorbs a pooled socket that died with a Redis restart;
    # timeouts are not retried (a slow Redis should fail open once, not twice).
    pool = CountingBlockingConnectionPool.from_url(
        url, max_connections=config.max_connections, timeout=config.pool_timeout,
        socket_timeout=config.socket_timeout, socket_connect_timeout=config.socket_connect_timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    return Redis.from_pool(pool), pool
