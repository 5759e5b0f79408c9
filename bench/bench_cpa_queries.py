"""Seed throughput and p50/p95 latency of each CPA query pattern on a sandbox PostgreSQL.

    .venv/bin/python bench/bench_cpa_queries.py [--scale medium] [--iterations 200] [--as-app]

Runs on the newest PostgreSQL build found; each pattern is called sequentially through the real query function
on one connection, over organizations of different sizes (the Zipf head, the middle and the tail).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import date

import psycopg

from pgwatch_cpa.cpa import queries as q
from pgwatch_cpa.cpa.loaders import CpaLoaders
from pgwatch_cpa.cpa.seed import seed
from pgwatch_cpa.sandbox import PostgresSandbox, find_pg_builds


async def bench(owner_dsn: str, dsn: str, iterations: int) -> list[tuple[str, float, float]]:
    with psycopg.connect(owner_dsn) as conn:  # setup lookups bypass RLS
        orgs = [r[0] for r in conn.execute("SELECT organization_id FROM clients GROUP BY 1 ORDER BY count(*) DESC")]
        users = dict(conn.execute("SELECT DISTINCT ON (organization_id) organization_id, assigned_to_id FROM tasks "
                                  "WHERE assigned_to_id IS NOT NULL ORDER BY organization_id, assigned_to_id"))
        client_ids = {o: [r[0] for r in conn.execute(
            "SELECT id FROM clients WHERE organization_id = %s LIMIT 25", [o])] for o in orgs[:40]}
    sample = [orgs[0], orgs[len(orgs) // 10], orgs[len(orgs) // 2], orgs[-1]]

    async def loaders(c, o):
        ids = client_ids.get(o) or client_ids[orgs[0]]
        lo = CpaLoaders(c, o)
        await asyncio.gather(*(lo.clients.load(i) for i in ids))
        await lo.documents_by_client.load_many(ids)

    async def keyset_page3(c, o):
        page = await q.list_documents_keyset(c, o, limit=50)
        page = await q.list_documents_keyset(c, o, cursor=page.next_cursor, limit=50)
        await q.list_documents_keyset(c, o, cursor=page.next_cursor, limit=50)

    patterns = {
        "client_dashboard (100 rows)": lambda c, o: q.client_dashboard(c, o, limit=100),
        "guide naive dashboard (all)": lambda c, o: q.guide_client_dashboard_naive(c, o),
        "list_clients (offset page 2)": lambda c, o: q.list_clients(c, o, page=2),
        "search_documents (filters)": lambda c, o: q.search_documents(c, o, category="w2", year=2025),
        "search_documents (file name)": lambda c, o: q.search_documents(c, o, file_name="tax_return_2024"),
        "list_documents_keyset (3 pages)": keyset_page3,
        "tasks_for_assignee": lambda c, o: q.tasks_for_assignee(c, o, users.get(o, "none")),
        "overdue_tasks": lambda c, o: q.overdue_tasks(c, o),
        "receivables_aging": lambda c, o: q.receivables_aging(c, o),
        "receivables_by_client": lambda c, o: q.receivables_by_client(c, o),
        "revenue_by_month": lambda c, o: q.revenue_by_month(c, o, date(date.today().year - 1, 1, 1)),
        "dashboard_metrics": lambda c, o: q.dashboard_metrics(c, o),
        "search_clients (full text)": lambda c, o: q.search_clients(c, o, "Summit Dental"),
        "find_client_by_quickbooks_id": lambda c, o: q.find_client_by_quickbooks_id(c, o, "qb_123"),
        "dataloader 25 clients + docs": loaders,
    }
    results = []
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for name, call in patterns.items():
            for org in sample:  # warm up
                await call(conn, org)
            timings = []
            for i in range(iterations):
                org = sample[i % len(sample)]
                t0 = time.perf_counter()
                await call(conn, org)
                timings.append((time.perf_counter() - t0) * 1000)
            timings.sort()
            results.append((name, statistics.median(timings), timings[int(len(timings) * 0.95) - 1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--as-app", action="store_true", help="run the queries as cpa_app (row-level security)")
    args = parser.parse_args()
    build = find_pg_builds()[0]
    with PostgresSandbox(build=build) as pg:
        dsn = pg.dsn()
        t0 = time.perf_counter()
        counts = asyncio.run(seed(dsn, args.scale))
        elapsed = time.perf_counter() - t0
        total = sum(counts.values())
        with psycopg.connect(dsn, autocommit=True) as conn:
            size = conn.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
                                "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace").fetchone()[0]
            if args.as_app:
                conn.execute("ALTER ROLE cpa_app LOGIN PASSWORD 'bench'")
        print(f"PostgreSQL {build.version}, scale={args.scale}, seed=42")
        print(f"seed: {total:,} rows in {elapsed:.1f} s = {total / elapsed:,.0f} rows/s "
              f"(COPY + VACUUM ANALYZE, indexes in place); on disk {size}")
        for table, n in counts.items():
            print(f"  {table:<27} {n:>10,}")
        run_dsn = pg.dsn(user="cpa_app", password="bench") if args.as_app else dsn
        role = "cpa_app (RLS)" if args.as_app else "owner"
        print(f"\n{'pattern':<34} {'p50 ms':>8} {'p95 ms':>8}   ({args.iterations} calls, as {role}, "
              f"orgs: largest, p10, median, smallest)")
        for name, p50, p95 in asyncio.run(bench(dsn, run_dsn, args.iterations)):
            print(f"{name:<34} {p50:>8.2f} {p95:>8.2f}")


if __name__ == "__main__":
    main()
