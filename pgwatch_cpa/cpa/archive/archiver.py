"""The archiver: every due row of every organization, in small batches, never lost and never exported twice.

    report = await archive(dsn, "file:///srv/cpa-archive", policies=["tasks"], batch_size=1000)

A batch of an exported policy (documents, tasks, audit_logs), one organization's oldest due rows:

1. journal row ``pending`` (``archive_batches``, committed alone);
2. export written durably, read back, row count and sha256 checked           crash point ``export_written``
3. manifest written durably beside it                                        crash point ``manifest_writing``
4. one short transaction: lock the batch's rows that are still due, compare each with its exported JSON (a row
   changed or no longer due: the batch is discarded, its files removed, and the rows come again in a later
   batch), apply the policy (DELETE / soft delete / mark), journal row ``applied``; COMMIT.
                                                                             crash point ``apply_executed``
A crash anywhere leaves a ``pending`` journal row. The next run starts with those: a batch whose manifest and
export verify goes through step 4 again, any other is discarded. Nothing is applied without its verified export,
and a row is applied in exactly one batch. Invoices are marked in place (no export): one transaction per batch.

One archiver at a time (a session advisory lock; a second one fails at once). The connection runs as the schema
owner (RLS does not hide rows from it) with TimeZone UTC, so the JSON of a row is always the same text. An
organization whose batch fails is recorded in ``archive_failures`` (the organization id stays in the database),
counted, and the run goes on with the next one; its rows are still due, so the next run tries them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import psycopg

from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.archive.destination import Destination, open_url
from pgwatch_cpa.cpa.archive.policies import Policy, count_due_query, due_batch_query, lock_due_query, select

log = logging.getLogger("pgwatch_cpa.cpa.archive")

CrashHook = Callable[[str], None]
CRASH_POINTS = ("export_written", "manifest_writing", "apply_executed")
ADVISORY_LOCK_KEY = 0x6370612D61726368  # 'cpa-arch'
DEFAULT_BATCH_SIZE = 1000
MAX_CONFLICTS = 5  # discarded batches in a row before an organization counts as failed
CONNECT_OPTIONS = ("-c TimeZone=UTC -c statement_timeout=60000 -c lock_timeout=5000 "
                   "-c idle_in_transaction_session_timeout=60000")


class ArchiveError(Exception):
    """The run cannot go on (another archiver holds the lock, a batch that does not add up)."""


class _Conflict(Exception):
    """A batch's rows changed (or stopped being due) between export and apply."""


@dataclass
class PolicyResult:
    policy: str
    rows: int = 0
    bytes: int = 0
    batches: int = 0
    recovered: int = 0  # pending batches of an earlier run completed
    discarded: int = 0  # batches whose files were removed (crash before the manifest, rows changed)
    failed_orgs: int = 0
    due_rows: int = 0  # dry run: rows due now
    due_orgs: int = 0
    pending: int = 0  # dry run: batches an earlier run left pending

    @property
    def ok(self) -> bool:
        return self.failed_orgs == 0


@dataclass
class ArchiveReport:
    dry_run: bool
    results: list[PolicyResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(not r.ok for r in self.results)

    def table(self) -> str:
        if self.dry_run:
            lines = [f"{'policy':<11} {'due rows':>10} {'orgs':>6} {'pending':>8}"]
            lines += [f"{r.policy:<11} {r.due_rows:>10,} {r.due_orgs:>6} {r.pending:>8}" for r in self.results]
            return "\n".join(lines)
        lines = [f"{'policy':<11} {'rows':>10} {'bytes':>12} {'batches':>8} {'recovered':>9} {'discarded':>9} "
                 f"{'failed orgs':>11}"]
        lines += [f"{r.policy:<11} {r.rows:>10,} {r.bytes:>12,} {r.batches:>8} {r.recovered:>9} {r.discarded:>9} "
                  f"{r.failed_orgs:>11}" for r in self.results]
        return "\n".join(lines)


class Progress(Protocol):
    async def policy_done(self, result: PolicyResult, succeeded_at: float | None) -> None: ...


@dataclass
class _Run:
    conn: psycopg.AsyncConnection[Any]
    dest: Destination
    batch_size: int
    storage_options: dict[str, Any] | None
    hook: CrashHook


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="cpa_archiver",
                                                 options=CONNECT_OPTIONS)


async def archive(dsn: str, to_url: str, *, policies: list[str] | None = None, org: str | None = None,
                  dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                  storage_options: dict[str, Any] | None = None, crash_hook: CrashHook | None = None,
                  progress: Progress | None = None) -> ArchiveReport:
    """Archive what is due (``org``: one organization only); ``dry_run`` counts and changes nothing.

    ``crash_hook(point)`` is called at each of CRASH_POINTS (crash tests kill the process there)."""
    if batch_size < 1 or batch_size > 100_000:
        raise ValueError(f"batch_size must be within 1..100000, not {batch_size}")
    selected = select(policies)
    report = ArchiveReport(dry_run)
    async with await connect(dsn) as conn:
        if dry_run:
            for policy in selected:
                report.results.append(await _count_due(conn, policy, org))
            return report
        await _lock(conn)
        run = _Run(conn, Destination(to_url, storage_options), batch_size, storage_options,
                   crash_hook or (lambda _point: None))
        for policy in selected:
            result = await _archive_policy(run, policy, org)
            report.results.append(result)
            if progress is not None:
                await _publish(progress, result)
    return report


async def _lock(conn: psycopg.AsyncConnection[Any]) -> None:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
    row = await cur.fetchone()
    if not (row and row[0]):
        raise ArchiveError("another archiver is running on this database (advisory lock held)")


async def _publish(progress: Progress, result: PolicyResult) -> None:
    try:
        await progress.policy_done(result, time.time() if result.ok else None)
    except Exception as exc:  # the archive is done; its statistics are not worth failing it
        log.warning("archive %s: could not publish progress: %s", result.policy, exc)


async def _count_due(conn: psycopg.AsyncConnection[Any], policy: Policy, org: str | None) -> PolicyResult:
    result = PolicyResult(policy.name)
    cur = await conn.execute(count_due_query(policy), [org, org])
    row = await cur.fetchone()
    result.due_rows, result.due_orgs = (int(row[0]), int(row[1])) if row else (0, 0)
    cur = await conn.execute("SELECT count(*) FROM archive_batches WHERE policy = %s AND state = 'pending'",
                             [policy.name])
    row = await cur.fetchone()
    result.pending = int(row[0]) if row else 0
    return result


async def _archive_policy(run: _Run, policy: Policy, org: str | None) -> PolicyResult:
    result = PolicyResult(policy.name)
    await _recover(run, policy, result)
    if org is not None:
        orgs = [org]
    else:
        cur = await run.conn.execute("SELECT id FROM organizations ORDER BY id")
        orgs = [r[0] for r in await cur.fetchall()]
    for org_id in orgs:
        try:
            await _archive_org(run, policy, org_id, result)
        except Exception as exc:  # an organization's failure is isolated, recorded and counted
            await _record_failure(run, policy, org_id, exc, result)
    log.info("archive %s: %d rows in %d batches (%d recovered, %d discarded), %d organization(s) failed",
             policy.name, result.rows, result.batches, result.recovered, result.discarded, result.failed_orgs)
    return result


async def _archive_org(run: _Run, policy: Policy, org_id: str, result: PolicyResult) -> None:
    conflicts = 0
    while True:
        cur = await run.conn.execute(due_batch_query(policy), [org_id, run.batch_size])
        rows: dict[str, str] = {r[0]: r[1] for r in await cur.fetchall()}
        if not rows:
            return
        applied = (await _export_batch(run, policy, org_id, rows, result) if policy.exported
                   else await _mark_batch(run, policy, org_id, rows, result))
        conflicts = 0 if applied else conflicts + 1
        if conflicts >= MAX_CONFLICTS:
            raise ArchiveError(f"{MAX_CONFLICTS} batches in a row changed while being archived")


async def _record_failure(run: _Run, policy: Policy, org_id: str, exc: Exception, result: PolicyResult) -> None:
    if run.conn.broken or run.conn.closed:
        raise exc  # the database is gone: nothing more to do in this run
    result.failed_orgs += 1
    log.error("archive %s: an organization failed (%s); see archive_failures", policy.name, type(exc).__name__)
    await run.conn.execute("INSERT INTO archive_failures (policy, organization_id, error) VALUES (%s, %s, %s)",
                           [policy.name, org_id, f"{type(exc).__name__}: {exc}"[:2000]])


def _new_batch(policy: Policy) -> tuple[str, str]:
    """(batch id, its path prefix relative to the destination root)."""
    now = datetime.now(UTC)
    batch_id = f"{policy.name}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"
    return batch_id, f"{policy.name}/{now:%Y/%m/%d}/{batch_id}"


async def _export_batch(run: _Run, policy: Policy, org_id: str, rows: dict[str, str],
                        result: PolicyResult) -> bool:
    batch_id, relative = _new_batch(policy)
    export_path = run.dest.path(relative + ex.EXPORT_SUFFIX)
    manifest_path = run.dest.path(relative + ex.MANIFEST_SUFFIX)
    export_url, manifest_url = run.dest.url(export_path), run.dest.url(manifest_path)
    await run.conn.execute(
        """INSERT INTO archive_batches (batch_id, policy, organization_id, state, export_url, manifest_url)
           VALUES (%s, %s, %s, 'pending', %s, %s)""", [batch_id, policy.name, org_id, export_url, manifest_url])
    export = ex.encode(list(rows.values()))
    manifest = ex.build_manifest(batch_id=batch_id, policy=policy.name, table=policy.table, organization_id=org_id,
                                 export=export, created_at=datetime.now(UTC))
    try:
        await asyncio.to_thread(run.dest.write, export_path, export.data)
        ex.decode(await asyncio.to_thread(run.dest.read, export_path), manifest)  # read back: count and checksum
        run.hook("export_written")
        await asyncio.to_thread(run.dest.write, manifest_path, ex.dump_manifest(manifest),
                                lambda: run.hook("manifest_writing"))
    except Exception:
        # Nothing applied: remove what was written (if the destination lets us; else the next run's recovery does).
        with contextlib.suppress(Exception):
            await _discard(run, batch_id, run.dest, export_path, manifest_path)
        raise
    return await _apply_or_discard(run, policy, batch_id, rows, export, (run.dest, export_path, manifest_path),
                                   result)


async def _apply_or_discard(run: _Run, policy: Policy, batch_id: str, rows: dict[str, str], export: ex.Export,
                            files: tuple[Destination, str, str], result: PolicyResult) -> bool:
    dest, export_path, manifest_path = files
    try:
        async with run.conn.transaction():
            cur = await run.conn.execute(lock_due_query(policy), [list(rows)])
            if {r[0]: r[1] for r in await cur.fetchall()} != rows:
                raise _Conflict
            await _apply(run, policy, rows, dest.url(export_path))
            run.hook("apply_executed")
            cur = await run.conn.execute(
                """UPDATE archive_batches
                      SET state = 'applied', row_count = %s, sha256 = %s, bytes = %s, applied_at = now(),
                          retain_until = now() + (SELECT retention FROM archive_policies WHERE policy = %s)
                    WHERE batch_id = %s AND state = 'pending'""",
                [export.row_count, export.sha256, len(export.data), policy.name, batch_id])
            if cur.rowcount != 1:
                raise ArchiveError(f"batch {batch_id} is no longer pending")
    except _Conflict:
        await _discard(run, batch_id, dest, export_path, manifest_path)
        result.discarded += 1
        return False
    except Exception:
        # Rolled back, nothing applied: remove the batch now rather than let every later run recover and fail it
        # again. Should the removal fail too, the batch stays pending and the next run's recovery handles it.
        if not (run.conn.broken or run.conn.closed):
            with contextlib.suppress(Exception):
                await _discard(run, batch_id, dest, export_path, manifest_path)
                result.discarded += 1
        raise
    result.rows += export.row_count
    result.bytes += len(export.data)
    result.batches += 1
    return True


async def _apply(run: _Run, policy: Policy, rows: dict[str, str], archive_url: str | None) -> None:
    ids = list(rows)
    cur = await run.conn.execute(policy.apply, policy.apply_params(archive_url, ids))
    if cur.rowcount != len(ids):
        raise ArchiveError(f"{policy.name}: applied to {cur.rowcount} rows of a batch of {len(ids)}")


async def _discard(run: _Run, batch_id: str, dest: Destination, *paths: str) -> None:
    await asyncio.to_thread(dest.remove, *paths)
    await run.conn.execute("DELETE FROM archive_batches WHERE batch_id = %s AND state = 'pending'", [batch_id])


async def _mark_batch(run: _Run, policy: Policy, org_id: str, rows: dict[str, str], result: PolicyResult) -> bool:
    """Invoices stay in the database: lock the rows still due, mark them, journal the batch; one transaction."""
    batch_id, _ = _new_batch(policy)
    async with run.conn.transaction():
        cur = await run.conn.execute(lock_due_query(policy), [list(rows)])
        current = {r[0]: r[1] for r in await cur.fetchall()}
        if not current:
            return False
        await _apply(run, policy, current, None)
        await run.conn.execute(
            """INSERT INTO archive_batches (batch_id, policy, organization_id, state, row_count, applied_at,
                                            retain_until)
               VALUES (%s, %s, %s, 'applied', %s, now(),
                       now() + (SELECT retention FROM archive_policies WHERE policy = %s))""",
            [batch_id, policy.name, org_id, len(current), policy.name])
    result.rows += len(current)
    result.batches += 1
    return True


# ---------------------------------------------------------------- crash recovery


async def _recover(run: _Run, policy: Policy, result: PolicyResult) -> None:
    cur = await run.conn.execute(
        """SELECT batch_id, organization_id, export_url, manifest_url FROM archive_batches
            WHERE policy = %s AND state = 'pending' ORDER BY created_at, batch_id""", [policy.name])
    for batch_id, org_id, export_url, manifest_url in await cur.fetchall():
        try:
            completed = await _recover_batch(run, policy, batch_id, org_id, export_url, manifest_url, result)
        except Exception as exc:  # isolated like an organization's batch: recorded, and the next run tries again
            await _record_failure(run, policy, org_id, exc, result)
            continue
        result.recovered += completed
        log.info("archive %s: pending batch %s %s", policy.name, batch_id, "completed" if completed else "discarded")


async def _recover_batch(run: _Run, policy: Policy, batch_id: str, org_id: str, export_url: str,
                         manifest_url: str, result: PolicyResult) -> bool:
    dest, export_path = open_url(export_url, run.storage_options)
    manifest_path = open_url(manifest_url, run.storage_options)[1]
    loaded = await _load_pending(dest, export_path, manifest_path, batch_id, policy, org_id)
    if loaded is None:
        await _discard(run, batch_id, dest, export_path, manifest_path)
        result.discarded += 1
        return False
    rows, export = loaded
    return await _apply_or_discard(run, policy, batch_id, rows, export, (dest, export_path, manifest_path), result)


async def _load_pending(dest: Destination, export_path: str, manifest_path: str, batch_id: str, policy: Policy,
                        org_id: str) -> tuple[dict[str, str], ex.Export] | None:
    """The rows of a pending batch whose manifest and export verify; None when the batch must be discarded."""
    try:
        manifest = ex.parse_manifest(await asyncio.to_thread(dest.read, manifest_path))
        if (manifest["batch_id"], manifest["policy"], manifest["organization_id"]) != (batch_id, policy.name, org_id):
            raise ex.ExportError("manifest belongs to another batch")
        export = ex.decode(await asyncio.to_thread(dest.read, export_path), manifest)
    except (FileNotFoundError, ex.ExportError) as exc:
        log.info("archive %s: pending batch %s cannot be completed (%s); discarding it", policy.name, batch_id,
                 type(exc).__name__)
        return None
    return {orjson.loads(line)["id"]: line for line in export.lines}, export
