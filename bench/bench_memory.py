"""The daemon's memory over time with the shipped alerts.yml loaded (issue 15: RSS rose 75 -> 104 MB in 18 minutes
at a 1 s interval and kept rising once the rules' 15-minute windows were full).

A sandbox PostgreSQL with the ``cpa`` database migrated and seeded (small) and a sandbox Redis, the CPA workload
in a subprocess (``pgwatch-cpa workload``, through the Redis caching service, so every collector has data and
pg_stat_statements' top-N and the cache statistics churn as they do in production), and the daemon in this
process at a 1 s interval, connected as a pg_monitor-only role, with the shipped rules. Every ``--every``
seconds one line: RSS (VmRSS of this process: the servers and the workload are other processes), what
tracemalloc holds (with ``--tracemalloc``), the alert history's series and samples, the engine's alerts, the
live registry's series, and Python's object count. With ``--tracemalloc`` the end prints the allocation sites
that grew most between the end of the warm-up and the end (the leak hunt); it slows the daemon down, so RSS
figures are taken without it.

    python -m bench.bench_memory --minutes 8 [--interval 1] [--every 30] [--warmup 3] [--no-rules] [--tracemalloc]
                                 [--unrotated-label-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from pgwatch_cpa.alerts.promql.values import label_cache_entries
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.daemon.lifecycle import Daemon
from pgwatch_cpa.daemon.malloc import limit_malloc_arenas
from pgwatch_cpa.demo.run import prepare_database
from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox, free_port
from pgwatch_cpa.shipped import rules_path


def rss_mib(pid: str | int = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def series_count(daemon: Daemon) -> int:
    return sum(len(m.samples) for m in daemon.exposition.live_registry.collect())


def line(t: float, daemon: Daemon, traced: bool) -> str:
    alerting = daemon.alerting
    hist = f"history {len(alerting.history):5d} series {alerting.history.samples_count():8d} samples  " \
           f"alerts {len(alerting.engine.alerts()):3d}  label cache {label_cache_entries():6d}  " if alerting else ""
    mem = f"traced {tracemalloc.get_traced_memory()[0] / 2**20:6.1f} MiB  " if traced else ""
    return (f"{t / 60:5.1f} min  RSS {rss_mib():6.1f} MiB  {mem}{hist}live series {series_count(daemon):4d}  "
            f"objects {len(gc.get_objects()):8d}")


async def measure(args: argparse.Namespace) -> int:
    limit_malloc_arenas()
    say = lambda text: print(text, flush=True)  # noqa: E731
    with PostgresSandbox() as pg, RedisSandbox() as rd:
        owner, monitor = await prepare_database(pg, "small", say)
        duration = args.minutes * 60
        workload = subprocess.Popen(
            [sys.executable, "-m", "pgwatch_cpa", "workload", "--dsn", owner, "--redis", rd.url, "--rate",
             str(args.rate), "--duration", str(duration + 60), "--app-instance", "bench-memory"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with tempfile.TemporaryDirectory(prefix="pgwatch-bench-memory-") as tmp:
                alerting = {"rules": [str(rules_path())], "state_file": str(Path(tmp) / "alerts.json")}
                settings = settings_from_mapping({
                    "listen": f"127.0.0.1:{free_port()}", "interval": f"{args.interval:g}s", "log_level": "warning",
                    "postgres": [{"name": "cpa", "dsn": monitor}], "redis": [{"name": "cache", "url": rd.url}],
                    **({} if args.no_rules else {"alerting": alerting}),
                }, environ={})
                return await _run(settings, args, duration)
        finally:
            workload.terminate()
            workload.wait(10)


async def _run(settings: object, args: argparse.Namespace, duration: float) -> int:
    daemon = Daemon(settings)  # type: ignore[arg-type]
    stop = asyncio.Event()
    serving = asyncio.create_task(daemon.serve(stop))
    started = time.monotonic()
    rules = "no rules" if args.no_rules else "shipped alerts.yml"
    print(f"daemon in this process (pid {__import__('os').getpid()}), interval {args.interval:g}s, {rules}, "
          f"{args.minutes:g} min, one line every {args.every:g}s", flush=True)
    warm_rss: float | None = None
    warm_snapshot: tracemalloc.Snapshot | None = None
    rows: list[tuple[float, float]] = []
    try:
        while (elapsed := time.monotonic() - started) < duration:
            await asyncio.sleep(min(args.every, max(0.0, duration - elapsed)))
            if serving.done():
                serving.result()
            elapsed = time.monotonic() - started
            gc.collect()
            rows.append((elapsed, rss_mib()))
            print(line(elapsed, daemon, args.tracemalloc), flush=True)
            if warm_rss is None and elapsed >= args.warmup * 60:
                warm_rss = rss_mib()
                if args.tracemalloc:
                    warm_snapshot = tracemalloc.take_snapshot()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
    final = rows[-1][1]
    if warm_rss is not None:
        print(f"RSS after the {args.warmup:g}-minute warm-up {warm_rss:.1f} MiB, at the end {final:.1f} MiB: "
              f"{(final - warm_rss) / warm_rss * 100:+.1f}%", flush=True)
    if warm_snapshot is not None:
        end = tracemalloc.take_snapshot()
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        print("allocation sites that grew most since the warm-up:")
        for stat in end.filter_traces(filters).compare_to(warm_snapshot.filter_traces(filters), "traceback")[:12]:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
            for frame in stat.traceback.format(limit=6):
                print(f"      {frame}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=1.0, help="the daemon's interval in seconds (default 1)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between lines (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="minutes before the reference RSS (default 3)")
    parser.add_argument("--rate", type=float, default=20.0, help="workload requests per second (default 20)")
    parser.add_argument("--no-rules", action="store_true", help="without alert rules (the reference)")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations (slower; for the leak hunt)")
    parser.add_argument("--unrotated-label-cache", action="store_true",
                        help="the evaluator's label-set caches as before the fix (never rotated; emptied only at "
                             "500,000 entries), for a before/after comparison")
    args = parser.parse_args(argv)
    if args.unrotated_label_cache:
        from pgwatch_cpa.alerts import engine
        from pgwatch_cpa.alerts.promql import values

        engine.rotate_label_caches = lambda: None  # type: ignore[assignment]
        for cache in (values._NAMELESS, values._SIGS):
            cache.limit = 500_000
    if args.tracemalloc:
        tracemalloc.start(8)
    return asyncio.run(measure(args))


if __name__ == "__main__":
    sys.exit(main())
