"""Command line: argparse sub-commands that delegate to the modules doing the work."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from pgwatch_cpa import __version__
from pgwatch_cpa.alerts.rules import RuleError
from pgwatch_cpa.errors import ConfigError, PgwatchError

if TYPE_CHECKING:
    from pgwatch_cpa.config import Settings

log = logging.getLogger("pgwatch_cpa")

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2
T = TypeVar("T")


def _cmd_run(args: argparse.Namespace) -> int:
    from pgwatch_cpa.config import load_settings
    from pgwatch_cpa.config.secret_files import warn_exposed_secret_files
    from pgwatch_cpa.daemon.lifecycle import run_daemon, share_the_gil_finely
    from pgwatch_cpa.daemon.malloc import limit_malloc_arenas
    from pgwatch_cpa.daemon.web_config import load_web_config

    overrides = {key: value for key, value in (("PGWATCH_LISTEN", args.listen), ("PGWATCH_SHARD", args.shard))
                 if value}
    web_config = load_web_config(args.web_config_file) if args.web_config_file else None  # ConfigError: exit 2
    def load() -> Settings:  # at start, and again on SIGHUP or when a targets file changes
        return load_settings(args.config, environ=_environ(overrides))

    settings = _loading(args.config, load)
    _setup_logging(args, settings)
    warn_exposed_secret_files(settings)  # one WARNING per secret file readable by group or others
    limit_malloc_arenas()
    share_the_gil_finely()
    asyncio.run(run_daemon(settings, web_config, load))
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from pgwatch_cpa.config import load_settings
    from pgwatch_cpa.daemon.alerting import load_rule_files

    settings = _loading(args.file, lambda: load_settings(args.file))
    rules = _loading(args.file, lambda: load_rule_files(settings.alerting.rules, settings.interval))
    print(f"{args.file}: OK ({len(settings.postgres)} postgres, {len(settings.redis)} redis targets, "
          f"{sum(1 for _ in rules.rules())} alert rules)")
    if settings.shard.count > 1:
        print(_shard_split(settings))
    return EXIT_OK


def _shard_split(settings: Settings) -> str:
    """This config's shard, and the share of the targets each of the N shards gets."""
    from pgwatch_cpa.daemon.sharding import settings_for_shard, shard_sizes, shard_summary

    sizes = ", ".join(str(size) for size in shard_sizes(settings))
    return f"{shard_summary(settings, settings_for_shard(settings))}\n(shards 1..{settings.shard.count}: {sizes})"


def _cmd_export_assets(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pgwatch_cpa import shipped

    dest = Path(args.to)
    try:
        written = shipped.export(dest)
    except OSError as exc:
        raise PgwatchError(f"cannot write to {dest}: {exc.strerror or exc}") from None
    except shipped.MissingAssetError as exc:
        raise PgwatchError(f"{exc} (a broken install: reinstall pgwatch-cpa)") from None
    for path in written:
        print(path)
    print(f"wrote {len(written)} files under {dest}: Prometheus `rule_files: [{dest / shipped.RULES}]`; Grafana "
          f"provisioning in {dest / 'grafana' / 'provisioning'}, dashboards in {dest / 'grafana' / 'dashboards'}",
          file=sys.stderr)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pgwatch_cpa.report.command import report_command

    if args.log_level is None:
        args.log_level = "warning"  # stderr says which target could not be read, and why; stdout is the report
    _setup_logging(args, None)
    return report_command(Path(args.config), target=args.target, fmt=args.format,
                          output=Path(args.output) if args.output else None,
                          previous=Path(args.previous) if args.previous else None)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pgwatch_cpa.demo.run import DemoOptions, run_demo, scenario_names

    if args.log_level is None:
        args.log_level = "warning"  # the demo's own lines (banner, alerts, scenarios) stay readable
    _setup_logging(args, None)
    opts = DemoOptions(listen=args.listen, duration=args.duration, scale=args.scale, rate=args.rate,
                       keep_data=Path(args.keep_data) if args.keep_data else None,
                       scenarios=scenario_names(args.scenario or [], args.schedule), alert_for=args.alert_for)
    return asyncio.run(run_demo(opts))


def _cmd_migrate(args: argparse.Namespace) -> int:
    from pgwatch_cpa.cpa.schema.migrate import migrate

    _setup_logging(args, None)
    applied = asyncio.run(migrate(args.dsn))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else " (up to date)"))
    return EXIT_OK


def _cmd_seed(args: argparse.Namespace) -> int:
    from pgwatch_cpa.cpa.seed import seed

    _setup_logging(args, None)
    counts = asyncio.run(seed(args.dsn, scale=args.scale, seed=args.seed))
    print(", ".join(f"{table}: {rows:,}" for table, rows in counts.items()))
    return EXIT_OK


def _cmd_workload(args: argparse.Namespace) -> int:
    from pgwatch_cpa.cpa.workload import run_workload
    from pgwatch_cpa.cpa.workload_stats import WorkloadReport

    _setup_logging(args, None)

    async def run() -> WorkloadReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_workload(args.dsn, args.redis, rate=args.rate, duration=args.duration, seed=args.seed,
                                  cache=not args.no_cache, app_instance=args.app_instance,
                                  write_ratio=args.write_ratio, stop=stop)

    report = asyncio.run(run())
    print(report.table())
    return EXIT_FAILURE if report.failed else EXIT_OK


def _cmd_archive(args: argparse.Namespace) -> int:
    from pgwatch_cpa.cpa.archive.archiver import ArchiveError
    from pgwatch_cpa.cpa.archive.command import ArchiveOptions, run_command
    from pgwatch_cpa.cpa.archive.destination import DestinationError

    _setup_logging(args, None)
    opts = ArchiveOptions(dsn=args.dsn, to=args.to, policies=tuple(args.policy or ()), org=args.org,
                          dry_run=args.dry_run, batch_size=args.batch_size, redis=args.redis,
                          schedule=args.schedule, restore=args.restore)
    try:
        return run_command(opts)
    except (ValueError, ArchiveError, DestinationError) as exc:  # ExportError is a ValueError
        raise PgwatchError(str(exc)) from None


def _loading(source: str, load: Callable[[], T]) -> T:
    """Run a config or rule loader. Bad input is its ConfigError or RuleError (exit 2, every problem listed);
    anything else is a bug in the loader: one line naming it (secrets masked), exit 1, never a traceback."""
    try:
        return load()
    except PgwatchError:
        raise
    except Exception as exc:
        from pgwatch_cpa.secrets import REDACTOR

        detail = REDACTOR.redact(" ".join(str(exc).split()))[:300]
        raise PgwatchError(f"{source}: could not be loaded: internal error {type(exc).__name__}: {detail} "
                           "(a bug in pgwatch-cpa: please report it)") from None


def _first_problems(problems: Sequence[str], limit: int = 50, width: int = 500) -> str:
    """A file with 100,000 problems prints the first ``limit`` (each clipped to ``width``), then a count."""
    lines = [p if len(p) <= width else f"{p[:width]}... ({len(p):,} characters)" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit:,} more")
    return "\n".join(f"  {line}" for line in lines)


def _environ(overrides: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, **overrides}


def _setup_logging(args: argparse.Namespace, settings: object | None) -> None:
    from pgwatch_cpa.logs import setup_logging

    level = args.log_level or getattr(settings, "log_level", "info")
    fmt = args.log_format or getattr(settings, "log_format", "text")
    setup_logging(level, fmt)


def build_parser() -> argparse.ArgumentParser:
    # Logging flags are accepted before or after the sub-command; SUPPRESS keeps a sub-parser from
    # overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS)
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="pgwatch-cpa", description="PostgreSQL and Redis monitoring for a CPA "
                                     "practice-management platform.", parents=[common])
    parser.add_argument("--version", action="version", version=f"pgwatch-cpa {__version__}")
    parser.set_defaults(log_format=None, log_level=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, **kw: sub.add_parser(name, parents=[common], **kw)  # noqa: E731

    run = add("run", help="run the monitoring daemon")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--listen", help="HOST:PORT for /metrics (overrides the config)")
    run.add_argument("--shard", metavar="K/N", help="watch only shard K of N of the targets (overrides the config's "
                     "shard); run N replicas, K = 1..N, each scraped by Prometheus")
    run.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                     help="TLS and basic auth for the endpoints, in the Prometheus exporter-toolkit's web config "
                          "format (/healthz and /readyz stay open)")
    run.set_defaults(func=_cmd_run)

    check = add("check-config", help="validate a config file (exit 0 valid, 2 invalid)")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check_config)

    export = add("export-assets", help="write the shipped alerts.yml and Grafana dashboards and provisioning out for "
                 "Prometheus and Grafana")
    export.add_argument("--to", required=True, metavar="DIR", help="directory (created if missing): alerts.yml, "
                        "grafana/dashboards/*.json, grafana/provisioning/**; files of the same names are replaced")
    export.set_defaults(func=_cmd_export_assets)

    report = add("report", help="the performance review: findings with the exact SQL or setting (exit 0 report, "
                 "1 no target readable, 2 bad input)")
    report.add_argument("--config", required=True, help="YAML config file (the daemon's)")
    report.add_argument("--target", metavar="NAME", help="report on this target only (default: every target)")
    report.add_argument("--format", choices=["md", "json", "html"], default="md", help="default md")
    report.add_argument("--output", metavar="FILE", help="write here (atomically) instead of stdout")
    report.add_argument("--previous", metavar="FILE.json", help="an earlier JSON report: adds the diff (new, "
                        "resolved, worse, better)")
    report.set_defaults(func=_cmd_report)

    migrate = add("migrate", help="apply the CPA schema migrations (idempotent)")
    migrate.add_argument("--dsn", required=True, help="PostgreSQL DSN of the CPA database (schema owner)")
    migrate.set_defaults(func=_cmd_migrate)

    seed = add("seed", help="load deterministic synthetic CPA data")
    seed.add_argument("--dsn", required=True)
    seed.add_argument("--scale", choices=["small", "medium", "large"], default="small")
    seed.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    seed.set_defaults(func=_cmd_seed)

    workload = add("workload", help="replay the CPA platform's traffic (open loop, Poisson arrivals)")
    workload.add_argument("--dsn", required=True, help="DSN of the seeded CPA database (schema owner)")
    workload.add_argument("--redis", default=None, help="Redis URL of the caching service (omit: no cache)")
    workload.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    workload.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    workload.add_argument("--write-ratio", type=float, default=0.05, help="share of writes (default 0.05)")
    workload.add_argument("--no-cache", action="store_true", help="bypass the cache even with --redis")
    workload.add_argument("--app-instance", default="workload-1", help="name in the cache statistics")
    workload.add_argument("--seed", type=int, default=1)
    workload.set_defaults(func=_cmd_workload)

    archive = add("archive", help="archive and purge CPA data as the guide's policies say (documents, tasks, "
                  "invoices, audit_logs); exit 1 when an organization failed")
    archive.add_argument("--dsn", required=True, help="DSN of the CPA database (schema owner)")
    archive.add_argument("--to", metavar="URL", help="where exports go: file:///DIR or s3://BUCKET/PREFIX (s3 needs "
                         "the s3 extra; credentials and AWS_ENDPOINT_URL from the environment)")
    archive.add_argument("--policy", action="append", metavar="NAME",
                         help="archive this policy only (repeatable; default: every one)")
    archive.add_argument("--org", metavar="ID", help="archive this organization only")
    archive.add_argument("--dry-run", action="store_true",
                         help="count the due rows and list the exports past retention; change nothing")
    archive.add_argument("--batch-size", type=int, default=1000, metavar="N", help="rows per batch (default 1000)")
    archive.add_argument("--redis", metavar="URL", help="publish progress to this Redis (the daemon exports it)")
    archive.add_argument("--schedule", metavar="CRON", help="run at every fire time of this cron expression (UTC; "
                         "the guide's daily run is '0 2 * * *') until SIGTERM")
    archive.add_argument("--restore", metavar="MANIFEST_URL", help="bring the batch of this manifest back instead")
    archive.set_defaults(func=_cmd_archive)

    demo = add("demo", help="the whole product on throwaway PostgreSQL and Redis servers, with fault scenarios")
    demo.add_argument("--listen", default="127.0.0.1:9188", help="HOST:PORT for /metrics (default 127.0.0.1:9188)")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    demo.add_argument("--scale", choices=["small", "medium"], default="small", help="seeded data (default small)")
    demo.add_argument("--rate", type=float, default=20.0, help="workload requests per second (default 20)")
    demo.add_argument("--keep-data", metavar="DIR", default=None,
                      help="keep the PostgreSQL data directory here and reuse it on the next run")
    runs = demo.add_mutually_exclusive_group()
    runs.add_argument("--scenario", action="append", metavar="NAME",
                      help="run a fault scenario (repeatable): lock-wait, connection-spike, slow-query, long-query, "
                           "idle-in-transaction, redis-down, cache-cold, archive-stalled")
    runs.add_argument("--schedule", action="store_true", help="run every scenario, one after another")
    demo.add_argument("--alert-for", type=float, default=10.0, metavar="SECONDS",
                      help="shorten every rule's `for` to at most this (default 10)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"error: {exc.source}: {len(exc.problems):,} problem(s)", file=sys.stderr)
        print(_first_problems(exc.problems), file=sys.stderr)
        return EXIT_INVALID
    except RuleError as exc:
        print(f"error: {exc}", file=sys.stderr)  # its message lists at most the first 50 problems
        return EXIT_INVALID
    except PgwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
