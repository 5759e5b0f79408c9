"""Replays the CPA platform's traffic against its database and caching service (guide "Load Testing").

    report = await run_workload(dsn, "redis://...", rate=100, duration=60)
    print(report.table())

Traffic, from the guide's Artillery scenarios: client list 30 %, document search 25 %, dashboard metrics 20 %,
task list 25 %, each through the query layer (queries.py) and, with ``cache=True``, the Redis caching service
(cache-aside: typed, tenant-scoped keys; client list and dashboard via :class:`QueryCache`). A share
``write_ratio`` (default 5 %) of requests are writes instead: task updates, document uploads, client updates and
invoice payments, each a real UPDATE/INSERT (plus its audit-log row) in a tenant-scoped transaction, followed,
after commit, by the cache's event invalidation (``task.update``, ``document.upload``, ``client.update``,
``invoice.paid``).

Open loop: arrivals are a Poisson process (exponential gaps) scheduled against the clock; every request is its
own task, so a slow database does not slow the arrivals. Latency is measured from the *scheduled* arrival time,
so queueing delay counts (no coordinated omission). At most ``max_in_flight`` requests are outstanding: an
arrival beyond that is dropped and counted (``cpa_workload_dropped_total``), never delayed.

Organizations and ids come from the seeded data, read once at start; an organization is chosen with probability
proportional to its number of clients (the seed's Zipf-like sizes: a few big practices get most of the traffic).
The DSN must see every organization (the schema owner; as ``cpa_app`` row-level security hides them).

Metrics (in ``registry``, one run per registry): ``cpa_workload_requests_total{scenario,outcome}``,
``cpa_workload_request_duration_seconds{scenario}``, ``cpa_workload_dropped_total``,
``cpa_workload_in_flight``; the cache service's ``cpa_cache_*`` while the run lasts. The cache publishes its stats
to Redis under ``app_instance``, which the daemon shows per instance, together with the application's PostgreSQL
pool and query-layer statistics (query_stats.py: each request is an API request of its scenario's name, each
tenant-scoped transaction a query). All random choices come from ``seed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Any, TypeVar

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pgwatch_cpa.cpa import queries as q
from pgwatch_cpa.cpa.background_jobs import run_background_jobs
from pgwatch_cpa.cpa.cache import CacheService, keys
from pgwatch_cpa.cpa.cache_adapter import QueryCache
from pgwatch_cpa.cpa.db import APPLICATION_NAME, create_pool
from pgwatch_cpa.cpa.query_stats import QueryLayerStats, app_sections, recording
from pgwatch_cpa.cpa.workload_stats import CacheSummary, RunningMoments, ScenarioStats, WorkloadReport

log = logging.getLogger("pgwatch_cpa.cpa.workload")
T = TypeVar("T")

__all__ = ["READ_MIX", "WRITE_EVENTS", "WRITE_MIX", "Inventory", "WorkloadError", "WorkloadReport",
           "arrival_gaps", "load_inventory", "run_workload"]

READ_MIX: dict[str, float] = {"client_list": 30, "document_search": 25, "dashboard_metrics": 20, "task_list": 25}
WRITE_MIX: dict[str, float] = {"task_update": 35, "document_upload": 30, "client_update": 20, "invoice_payment": 15}
WRITE_EVENTS = {"task_update": "task.update", "document_upload": "document.upload",
                "client_update": "client.update", "invoice_payment": "invoice.paid"}
DEFAULT_APP_INSTANCE = "workload-1"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
SEARCH_TERMS = ("tax", "w2", "1099", "receipt", "invoice", "bank", "payroll", "statement")
CLIENT_STATUSES = (("active", 85), ("prospect", 8), ("inactive", 7))
PAGES = ((1, 70), (2, 20), (3, 10))
OPEN_TASK_STATUSES = ("todo", "in_progress", "review", "blocked")
_IDS_PER_ORG = 500  # ids kept per organization and entity (enough variety, bounded memory at any scale)


class WorkloadError(Exception):
    """The workload cannot run (no seeded data visible, bad parameters)."""


# ---------------------------------------------------------------- seeded data


@dataclass
class OrgData:
    id: str
    clients: int  # live clients: the traffic weight
    client_ids: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)  # users with open tasks
    open_tasks: list[str] = field(default_factory=list)
    open_invoices: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    orgs: list[OrgData]
    years: list[int]  # recent document years, newest first

    def sampler(self, need: Callable[[OrgData], bool]) -> tuple[list[OrgData], list[float]]:
        chosen = [o for o in self.orgs if need(o)]
        return chosen, list(accumulate(float(o.clients) for o in chosen))


_INVENTORY_SQL = {
    "orgs": """SELECT organization_id, count(*) FROM clients WHERE deleted_at IS NULL GROUP BY 1 ORDER BY 2 DESC, 1""",
    "client_ids": """
        SELECT organization_id, id FROM (
            SELECT organization_id, id, row_number() OVER (PARTITION BY organization_id ORDER BY id) AS n
              FROM clients WHERE deleted_at IS NULL) s
         WHERE n <= %(cap)s""",
    "users": """
        SELECT organization_id, id FROM (
            SELECT organization_id, id, row_number() OVER (PARTITION BY organization_id ORDER BY id) AS n
              FROM users WHERE deleted_at IS NULL AND is_active) s
         WHERE n <= %(cap)s""",
    "assignees": """
        SELECT DISTINCT organization_id, assigned_to_id FROM tasks
         WHERE deleted_at IS NULL AND status NOT IN ('completed', 'cancelled') AND assigned_to_id IS NOT NULL""",
    "open_tasks": """
        SELECT organization_id, id FROM (
            SELECT organization_id, id, row_number() OVER (PARTITION BY organization_id ORDER BY id) AS n
              FROM tasks WHERE deleted_at IS NULL AND status NOT IN ('completed', 'cancelled')) s
         WHERE n <= %(cap)s""",
    "open_invoices": """
        SELECT organization_id, id FROM (
            SELECT organization_id, id, row_number() OVER (PARTITION BY organization_id ORDER BY id) AS n
              FROM invoices WHERE deleted_at IS NULL AND status IN ('sent', 'partial', 'overdue')) s
         WHERE n <= %(cap)s""",
    "years": """SELECT DISTINCT year FROM documents WHERE deleted_at IS NULL ORDER BY year DESC LIMIT 3""",
}


async def load_inventory(dsn: str, *, cap: int = _IDS_PER_ORG) -> Inventory:
    """Organizations (with their client counts) and up to ``cap`` ids per organization and entity."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True,
                                                     application_name="cpa_workload_inventory") as conn:
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for name, query in _INVENTORY_SQL.items():
            cur = await conn.execute(query, {"cap": cap})
            rows[name] = list(await cur.fetchall())
    orgs = {org: OrgData(org, int(n)) for org, n in rows["orgs"]}
    if not orgs:
        raise WorkloadError("no organizations with clients are visible: seed the database first (pgwatch-cpa seed) "
                            "and connect as the schema owner (row-level security hides them from cpa_app)")
    for name, attr in (("client_ids", "client_ids"), ("users", "users"), ("assignees", "assignees"),
                       ("open_tasks", "open_tasks"), ("open_invoices", "open_invoices")):
        for org, item in rows[name]:
            if org in orgs:
                getattr(orgs[org], attr).append(item)
    for org in orgs.values():
        org.assignees.sort()
    return Inventory(list(orgs.values()), [int(r[0]) for r in rows["years"]])


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Request:
    scenario: str
    org: str
    params: Mapping[str, Any]


def _weighted(pairs: Any) -> tuple[list[Any], list[float]]:
    values = [v for v, _ in pairs]
    return values, list(accumulate(float(w) for _, w in pairs))


class _Planner:
    """Draws every random choice (scenario, organization, ids, values) from seeded generators, in arrival order."""

    def __init__(self, inventory: Inventory, seed: int, write_ratio: float,
                 read_mix: Mapping[str, float], write_mix: Mapping[str, float]) -> None:
        self.rng = random.Random(f"{seed}:requests")
        mix = [(s, w * (1 - write_ratio)) for s, w in read_mix.items() if w > 0]
        if write_ratio > 0:
            total = sum(write_mix.values())
            mix += [(s, write_ratio * sum(read_mix.values()) * w / total) for s, w in write_mix.items() if w > 0]
        self.scenarios, self.scenario_cum = _weighted(mix)
        inv = inventory
        self.years = inv.years or [2024]
        self.orgs = {
            "any": inv.sampler(lambda o: bool(o.client_ids)),
            "assignees": inv.sampler(lambda o: bool(o.assignees)),
            "tasks": inv.sampler(lambda o: bool(o.open_tasks)),
            "invoices": inv.sampler(lambda o: bool(o.open_invoices)),
            "upload": inv.sampler(lambda o: bool(o.client_ids and o.users)),
        }
        self.statuses = _weighted(CLIENT_STATUSES)
        self.pages = _weighted(PAGES)

    def _pick(self, values_cum: tuple[list[T], list[float]]) -> T:
        values, cum = values_cum
        if not values:
            raise WorkloadError("the seeded data has no rows this scenario needs")
        return values[bisect_right(cum, self.rng.random() * cum[-1])]

    def next(self) -> Request:
        scenario = self._pick((self.scenarios, self.scenario_cum))
        return getattr(self, "_" + scenario)()

    def _org(self, need: str = "any") -> OrgData:
        return self._pick(self.orgs[need])

    def _client_list(self) -> Request:
        org = self._org()
        return Request("client_list", org.id, {"status": self._pick(self.statuses), "page": self._pick(self.pages)})

    def _document_search(self) -> Request:
        org = self._org()
        return Request("document_search", org.id, {"term": self.rng.choice(SEARCH_TERMS),
                                                   "year": self.rng.choice(self.years)})

    def _dashboard_metrics(self) -> Request:
        return Request("dashboard_metrics", self._org().id, {})

    def _task_list(self) -> Request:
        org = self._org("assignees")
        return Request("task_list", org.id, {"assignee": self.rng.choice(org.assignees)})

    def _task_update(self) -> Request:
        org = self._org("tasks")
        return Request("task_update", org.id, {"task": self.rng.choice(org.open_tasks),
                                               "status": self.rng.choice(OPEN_TASK_STATUSES),
                                               "user": self.rng.choice(org.users) if org.users else None})

    def _document_upload(self) -> Request:
        org = self._org("upload")
        client = self.rng.choice(org.client_ids)
        category = self.rng.choice(("tax_return", "w2", "1099", "receipt", "bank_statement", "invoice"))
        year = self.rng.choice(self.years)
        return Request("document_upload", org.id, {
            "client": client, "user": self.rng.choice(org.users), "category": category, "year": year,
            "quarter": self.rng.randint(1, 4), "size": self.rng.randrange(20_000, 9_000_000),
            "file_name": f"{category}_{year}_{client.replace('_', '-')}_upload_{self.rng.randrange(10**9)}.pdf"})

    def _client_update(self) -> Request:
        org = self._org()
        return Request("client_update", org.id, {"client": self.rng.choice(org.client_ids),
                                                 "risk": self.rng.choice(("low", "medium", "high")),
                                                 "user": self.rng.choice(org.users) if org.users else None})

    def _invoice_payment(self) -> Request:
        org = self._org("invoices")
        cents = self.rng.randrange(5_000, 200_000)
        return Request("invoice_payment", org.id, {"invoice": self.rng.choice(org.open_invoices),
                                                   "amount": Decimal(cents).scaleb(-2),
                                                   "user": self.rng.choice(org.users) if org.users else None})


# ---------------------------------------------------------------- execution

_AUDIT_SQL = """INSERT INTO audit_logs (organization_id, user_id, entity_type, entity_id, action, changes)
                VALUES (%s, %s, %s, %s, %s, %s::jsonb)"""


class _Executor:
    """Runs one Request against the pool and (optionally) the cache."""

    def __init__(self, pool: AsyncConnectionPool, service: CacheService | None, stats: QueryLayerStats) -> None:
        self.pool = pool
        self.service = service
        self.stats = stats
        self.qcache = QueryCache(service) if service is not None else None

    async def run(self, req: Request) -> bool | None:
        """Execute (one API request); for writes return whether the cache invalidation succeeded (None: no cache
        or a read)."""
        handler: Callable[[Request], Awaitable[bool | None]] = getattr(self, "_" + req.scenario)
        async with self.stats.measure_request(req.scenario):
            return await handler(req)

    async def _cached(self, key: keys.CacheKey, load: Callable[[], Awaitable[Any]]) -> Any:
        return await (self.service.get_or_load(key, load) if self.service is not None else load())

    async def _client_list(self, req: Request) -> None:
        p = req.params
        await q.list_clients(self.pool, req.org, status=p["status"], page=p["page"], cache=self.qcache)

    async def _document_search(self, req: Request) -> None:
        p = req.params

        async def load() -> list[q.Row]:
            return await q.search_documents(self.pool, req.org, file_name=p["term"], year=p["year"], limit=20)
        await self._cached(keys.document_list(req.org, "all", {"q": p["term"], "year": p["year"], "limit": 20}),
                           load)

    async def _dashboard_metrics(self, req: Request) -> None:
        await q.dashboard_metrics(self.pool, req.org, cache=self.qcache)

    async def _task_list(self, req: Request) -> None:
        assignee = req.params["assignee"]

        async def load() -> list[q.Row]:
            return await q.tasks_for_assignee(self.pool, req.org, assignee, limit=50)
        await self._cached(keys.task_list(req.org, assignee, {"status": "open", "limit": 50}), load)

    async def _invalidate(self, req: Request) -> bool | None:
        if self.service is None:
            return None
        return await self.service.invalidate(WRITE_EVENTS[req.scenario], req.org)

    async def _task_update(self, req: Request) -> bool | None:
        p = req.params
        async with q.tenant_cursor(self.pool, req.org, req.scenario) as cur:
            await cur.execute("""
                UPDATE tasks SET status = %s, updated_at = now()
                 WHERE id = %s AND organization_id = %s AND deleted_at IS NULL
                   AND status NOT IN ('completed', 'cancelled')""", [p["status"], p["task"], req.org])
            await cur.execute(_AUDIT_SQL, [req.org, p["user"], "task", p["task"], "update",
                                           json.dumps({"status": p["status"]})])
        return await self._invalidate(req)

    async def _document_upload(self, req: Request) -> bool | None:
        p = req.params
        async with q.tenant_cursor(self.pool, req.org, req.scenario) as cur:
            await cur.execute("""
                INSERT INTO documents (organization_id, client_id, uploaded_by, file_name, file_size, category, year,
                                       quarter, ocr_status, tags)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'pending', ARRAY['client_upload'])
                RETURNING id""", [req.org, p["client"], p["user"], p["file_name"], p["size"], p["category"],
                                  p["year"], p["quarter"]])
            row = await cur.fetchone()
            await cur.execute(_AUDIT_SQL, [req.org, p["user"], "document", row["id"] if row else "", "create",
                                           json.dumps({"file_name": p["file_name"]})])
        return await self._invalidate(req)

    async def _client_update(self, req: Request) -> bool | None:
        p = req.params
        async with q.tenant_cursor(self.pool, req.org, req.scenario) as cur:
            await cur.execute("""
                UPDATE clients SET risk_level = %s, updated_at = now()
                 WHERE id = %s AND organization_id = %s AND deleted_at IS NULL""",
                              [p["risk"], p["client"], req.org])
            await cur.execute(_AUDIT_SQL, [req.org, p["user"], "client", p["client"], "update",
                                           json.dumps({"risk_level": p["risk"]})])
        return await self._invalidate(req)

    async def _invoice_payment(self, req: Request) -> bool | None:
        p = req.params
        async with q.tenant_cursor(self.pool, req.org, req.scenario) as cur:
            # A partial or full payment; an invoice paid off earlier in the run matches no row (still a real write).
            await cur.execute("""
                UPDATE invoices
                   SET paid_amount = LEAST(total_amount, paid_amount + %(amount)s),
                       status = CASE WHEN paid_amount + %(amount)s >= total_amount THEN 'paid' ELSE 'partial' END,
                       paid_at = CASE WHEN paid_amount + %(amount)s >= total_amount THEN now() ELSE paid_at END,
                       updated_at = now()
                 WHERE id = %(id)s AND organization_id = %(org)s AND deleted_at IS NULL
                   AND status IN ('sent', 'partial', 'overdue')""",
                              {"amount": p["amount"], "id": p["invoice"], "org": req.org})
            await cur.execute(_AUDIT_SQL, [req.org, p["user"], "invoice", p["invoice"], "payment",
                                           json.dumps({"amount": str(p["amount"])})])
        return await self._invalidate(req)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("cpa_workload_requests", "Workload requests by scenario and outcome",
                                ["scenario", "outcome"], registry=registry)
        self.duration = Histogram("cpa_workload_request_duration_seconds", "Request latency from the scheduled "
                                  "arrival time (queueing included)", ["scenario"], buckets=DURATION_BUCKETS,
                                  registry=registry)
        self.dropped = Counter("cpa_workload_dropped", "Arrivals dropped because max_in_flight requests were "
                               "outstanding (overload)", registry=registry)
        self.in_flight = Gauge("cpa_workload_in_flight", "Workload requests outstanding", registry=registry)


# ---------------------------------------------------------------- the run


def arrival_gaps(rate: float, seed: int) -> Iterator[float]:
    """Inter-arrival gaps (seconds) of a Poisson process of ``rate`` per second: exponential, independent."""
    rng = random.Random(f"{seed}:arrivals")
    while True:
        yield rng.expovariate(rate)


class _Run:
    def __init__(self, *, rate: float, duration: float | None, planner: _Planner, executor: _Executor,
                 metrics: _Metrics, stop: asyncio.Event, max_in_flight: int, arrivals_seed: int,
                 scenarios: dict[str, ScenarioStats]) -> None:
        self.duration = duration
        self.planner = planner
        self.executor = executor
        self.metrics = metrics
        self.stop = stop
        self.max_in_flight = max_in_flight
        self.gap_source = arrival_gaps(rate, arrivals_seed)
        self.scenarios = scenarios
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.offered = 0
        self.dropped = 0
        self.gaps = RunningMoments()
        self.max_lag = 0.0
        self.invalidated = 0
        self.window = 0.0
        self._logged_errors = 0

    async def generate(self) -> None:
        """Poisson arrivals against the clock until ``duration`` or ``stop``; never waits for a request."""
        loop = asyncio.get_running_loop()
        start = scheduled = loop.time()
        stop_wait = asyncio.ensure_future(self.stop.wait())
        behind = 0
        try:
            while not self.stop.is_set():
                gap = next(self.gap_source)
                scheduled += gap
                if self.duration is not None and scheduled - start >= self.duration:
                    break
                delay = scheduled - loop.time()
                if delay > 0:
                    behind = 0
                    done, _ = await asyncio.wait({stop_wait}, timeout=delay)
                    if done:
                        break
                else:
                    behind += 1
                    if behind % 16 == 0:  # catching up: let requests run, but keep the schedule
                        await asyncio.sleep(0)
                self.max_lag = max(self.max_lag, loop.time() - scheduled)
                self.gaps.add(gap)
                self._arrive(scheduled)
        finally:
            stop_wait.cancel()
            end = loop.time() if self.duration is None else min(loop.time(), start + self.duration)
            self.window = max(end - start, 1e-9)

    def _arrive(self, scheduled: float) -> None:
        self.offered += 1
        req = self.planner.next()
        if self.in_flight >= self.max_in_flight:
            self.dropped += 1
            self.scenarios[req.scenario].dropped += 1
            self.metrics.dropped.inc()
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        task = asyncio.create_task(self._request(req, scheduled))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _request(self, req: Request, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        stats = self.scenarios[req.scenario]
        outcome = "ok"
        try:
            if await self.executor.run(req):
                self.invalidated += 1
        except asyncio.CancelledError:
            outcome = ""
            raise
        except (PoolTimeout, pg_errors.QueryCanceled, TimeoutError) as exc:
            outcome = "timeout"
            stats.errors[type(exc).__name__] += 1
        except Exception as exc:  # task boundary: one request's failure is counted, never fatal to the run
            outcome = "error"
            stats.errors[type(exc).__name__] += 1
            if self._logged_errors < 5:
                self._logged_errors += 1
                log.warning("workload %s request failed: %s: %s", req.scenario, type(exc).__name__, exc)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            if outcome:
                latency = loop.time() - scheduled
                stats.outcomes[outcome] += 1
                stats.latency.observe(latency)
                self.metrics.requests.labels(req.scenario, outcome).inc()
                self.metrics.duration.labels(req.scenario).observe(latency)

    async def drain(self, timeout: float) -> int:
        """Wait for outstanding requests; cancel what is left after ``timeout``. Returns the number cancelled."""
        pending = set(self.tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)


def _cache_summary(service: CacheService) -> CacheSummary:
    summary = CacheSummary(invalidations=dict(service.stats.invalidations))
    for fs in service.stats.families.values():
        summary.hits += fs.requests["hit"]
        summary.misses += fs.requests["miss"]
        summary.stale += fs.requests["stale"]
        summary.errors += fs.requests["error"]
        summary.loads += fs.loads
    return summary


async def run_workload(dsn: str, redis_url: str | None, *, rate: float, duration: float | None,
                       seed: int = 1, cache: bool = True, app_instance: str = DEFAULT_APP_INSTANCE,
                       write_ratio: float = 0.05, max_in_flight: int = 256, pool_size: int = 20,
                       stop: asyncio.Event | None = None, registry: CollectorRegistry | None = None,
                       drain_timeout: float = 10.0, read_mix: Mapping[str, float] | None = None,
                       write_mix: Mapping[str, float] | None = None,
                       cache_options: Mapping[str, Any] | None = None,
                       inventory: Inventory | None = None, background_jobs: bool = False) -> WorkloadReport:
    """Replay the platform's traffic at ``rate`` requests/s until ``duration`` seconds pass or ``stop`` is set.

    ``cache`` uses the Redis caching service at ``redis_url`` (ignored, with Redis untouched, when False or when
    ``redis_url`` is None). ``pool_size`` is the application's PostgreSQL pool (guide: 20). ``inventory`` skips
    reading the seeded ids (a benchmark running many steps reads them once). ``background_jobs`` also plays the
    OCR, report and QuickBooks jobs (cpa.background_jobs) on the pool while the run lasts. On return every request
    has finished (or been cancelled after ``drain_timeout``) and the pool and cache are closed.
    """
    if rate <= 0 or not 0 <= write_ratio < 1 or max_in_flight < 1 or pool_size < 1:
        raise WorkloadError("rate > 0, 0 <= write_ratio < 1, max_in_flight >= 1 and pool_size >= 1 are required")
    if duration is None and stop is None:
        raise WorkloadError("give a duration or a stop event, or the workload never ends")
    read_mix = dict(READ_MIX if read_mix is None else read_mix)
    write_mix = dict(WRITE_MIX if write_mix is None else write_mix)
    unknown = (set(read_mix) - set(READ_MIX)) | (set(write_mix) - set(WRITE_MIX))
    if unknown:
        raise WorkloadError(f"unknown scenarios: {', '.join(sorted(unknown))}")
    use_cache = cache and redis_url is not None
    if cache and redis_url is None:
        log.info("no Redis URL: the workload runs without the cache")
    registry = registry if registry is not None else CollectorRegistry()
    stop = stop if stop is not None else asyncio.Event()

    inventory = inventory if inventory is not None else await load_inventory(dsn)
    planner = _Planner(inventory, seed, write_ratio, read_mix, write_mix)
    scenarios = {name: ScenarioStats(name, "read") for name in read_mix}
    if write_ratio > 0:
        scenarios.update({name: ScenarioStats(name, "write") for name in write_mix})
    try:
        metrics = _Metrics(registry)
    except ValueError as exc:  # prometheus_client: "Duplicated timeseries"
        raise WorkloadError(f"the registry already holds workload metrics; use one registry per run ({exc})") from exc

    service: CacheService | None = None
    pool = create_pool(dsn, min_size=pool_size, max_size=pool_size, application_name=APPLICATION_NAME,
                       name=f"cpa_workload:{app_instance}")
    query_stats = QueryLayerStats()
    run: _Run | None = None
    cancelled = 0
    try:
        await pool.open(wait=True)
        if use_cache:
            assert redis_url is not None
            service = await CacheService.create(redis_url, app_instance=app_instance, registry=registry,
                                                app_stats=lambda: app_sections(pool, query_stats),
                                                **dict(cache_options or {}))
        run = _Run(rate=rate, duration=duration, planner=planner, executor=_Executor(pool, service, query_stats),
                   metrics=metrics, stop=stop, max_in_flight=max_in_flight, arrivals_seed=seed,
                   scenarios=scenarios)
        with recording(query_stats):  # the request tasks created by generate() (and the jobs) inherit it
            jobs_stop = asyncio.Event()
            jobs = (asyncio.create_task(run_background_jobs(pool, [o.id for o in inventory.orgs], jobs_stop,
                                                            seed=seed), name="cpa_workload:background_jobs")
                    if background_jobs else None)
            try:
                await run.generate()
            finally:
                jobs_stop.set()
                if jobs is not None:
                    await jobs
                cancelled = await run.drain(drain_timeout)
        cache_summary = _cache_summary(service) if service is not None else None
    finally:
        if run is not None and run.tasks:  # cancelled from outside: do not leave requests behind
            await run.drain(0)
        if service is not None:
            with contextlib.suppress(Exception):
                await service.close()
        await pool.close()

    return WorkloadReport(
        rate=rate, window=run.window, cache_enabled=use_cache, app_instance=app_instance,
        max_in_flight=max_in_flight, scenarios=scenarios, offered=run.offered, dropped=run.dropped,
        cancelled=cancelled, interarrival_mean=run.gaps.mean, interarrival_std=run.gaps.std,
        max_dispatch_lag=run.max_lag, cache=cache_summary, writes_invalidated=run.invalidated)
