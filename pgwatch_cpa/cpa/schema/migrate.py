"""Forward-only, checksummed migrations for the CPA schema.

    applied = await migrate("postgresql://owner@db/cpa")      # -> ['0001_extensions_and_roles.sql', ...]
    applied = migrate_sync(dsn)                                # same, for a CLI

Rules:

* Files are ``NNNN_name.sql`` in ``migrations/``, applied in number order, each recorded in ``schema_migrations``
  with its sha256. An applied file that changed on disk is refused (:class:`MigrationError` naming the file):
  migrations are forward-only, write a new file instead.
* A session advisory lock serialises runners: a second runner waits (polling pg_try_advisory_lock, never
  blocking inside a statement, which would deadlock with CREATE INDEX CONCURRENTLY), then finds nothing to do.
* A file whose first lines contain ``-- migrate: no-transaction`` runs statement by statement in autocommit
  (``CREATE INDEX CONCURRENTLY`` refuses transactions); every other file runs in one transaction with its record.
* A failed concurrent build leaves an INVALID index (``pg_index.indisvalid = false``). Before creating an index,
  and on every run for the indexes of already-applied files, the runner drops such an index concurrently and
  builds it again.

Progress goes to the ``pgwatch_cpa.cpa.migrate`` logger (INFO per file, DEBUG per statement).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger("pgwatch_cpa.cpa.migrate")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
NO_TRANSACTION_MARKER = "-- migrate: no-transaction"
# Arbitrary but fixed: the 64-bit key of the session advisory lock every runner takes ('cpa-migr' in ASCII).
ADVISORY_LOCK_KEY = 0x6370612D6D696772
_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_CREATE_INDEX_RE = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_][A-Za-z0-9_]*)\s",
    re.IGNORECASE,
)


class MigrationError(Exception):
    """A migration cannot be applied: an edited applied file, a malformed file name, a failed statement."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        head = "\n".join(self.text.splitlines()[:5])
        return NO_TRANSACTION_MARKER not in head

    def statements(self) -> list[str]:
        return split_statements(self.text)

    def index_statements(self) -> dict[str, str]:
        """Index name -> its CREATE INDEX CONCURRENTLY IF NOT EXISTS statement (no-transaction files)."""
        found: dict[str, str] = {}
        for stmt in self.statements():
            match = _CREATE_INDEX_RE.match(_strip_comments(stmt))
            if match:
                found[match[1]] = stmt
        return found


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files of ``directory`` (default: the packaged ones), validated and sorted."""
    directory = directory or MIGRATIONS_DIR
    migrations: list[Migration] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration file names must look like 0001_lower_snake.sql")
        if match[1] in seen:
            raise MigrationError(f"{path.name}: version {match[1]} already used by {seen[match[1]]}")
        seen[match[1]] = path.name
        migrations.append(Migration(match[1], path.name, path.read_text(encoding="utf-8")))
    return migrations


def split_statements(text: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            buf.append(text[i:end])
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            buf.append(text[i:end])
            i = end
        elif ch in ("'", '"'):
            end = i + 1
            while end < n:
                if text[end] == ch:
                    if end + 1 < n and text[end + 1] == ch:  # doubled quote
                        end += 2
                        continue
                    break
                end += 1
            buf.append(text[i:end + 1])
            i = end + 1
        elif ch == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])):
            tag = m[0]
            end = text.find(tag, i + len(tag))
            end = n if end == -1 else end + len(tag)
            buf.append(text[i:end])
            i = end
        elif ch == ";":
            stmt = "".join(buf).strip()
            if _strip_comments(stmt):
                statements.append(stmt)
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    stmt = "".join(buf).strip()
    if _strip_comments(stmt):
        statements.append(stmt)
    return statements


def _strip_comments(stmt: str) -> str:
    lines = [line for line in stmt.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip()


async def migrate(dsn: str, *, migrations_dir: Path | None = None, lock_timeout_s: float | None = None) -> list[str]:
    """Apply every pending migration to ``dsn``; return the names of the files applied (empty: up to date).

    ``lock_timeout_s`` bounds the wait for the advisory lock held by another runner (default: wait forever).
    Raises :class:`MigrationError` on an edited applied file or a failing statement.
    """
    migrations = load_migrations(migrations_dir)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True,
                                                     application_name="pgwatch-cpa-migrate") as conn:
        await _acquire_lock(conn, lock_timeout_s)
        try:
            await conn.execute("""
                CREATE TABLE IF NOT EXISTS public.schema_migrations (
                    version     text PRIMARY KEY,
                    filename    text NOT NULL,
                    checksum    text NOT NULL,
                    applied_at  timestamptz NOT NULL DEFAULT now(),
                    duration_ms integer NOT NULL
                )""")
            cur = await conn.execute("SELECT version, filename, checksum FROM public.schema_migrations")
            applied = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
            _verify_applied(migrations, applied)
            await _repair_invalid_indexes(conn, [m for m in migrations if m.version in applied])
            done: list[str] = []
            pending = [m for m in migrations if m.version not in applied]
            if not pending:
                log.info("schema is up to date (%d migrations applied)", len(applied))
            for migration in pending:
                await _apply(conn, migration)
                done.append(migration.name)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])


def migrate_sync(dsn: str, *, migrations_dir: Path | None = None, lock_timeout_s: float | None = None) -> list[str]:
    """Blocking wrapper of :func:`migrate` for command-line use."""
    return asyncio.run(migrate(dsn, migrations_dir=migrations_dir, lock_timeout_s=lock_timeout_s))


async def _acquire_lock(conn: psycopg.AsyncConnection, timeout_s: float | None) -> None:
    """Take the session advisory lock, polling with pg_try_advisory_lock.

    A blocking ``pg_advisory_lock`` would deadlock: the waiting statement is an open transaction, and the lock
    holder's CREATE INDEX CONCURRENTLY waits for every open transaction to finish.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay, announced = 0.05, False
    while True:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        row = await cur.fetchone()
        if row and row[0]:
            return
        if not announced:
            log.info("another migration runner holds the lock; waiting")
            announced = True
        if deadline is not None and time.monotonic() >= deadline:
            raise MigrationError(f"another migration runner held the lock for more than {timeout_s}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _verify_applied(migrations: list[Migration], applied: dict[str, tuple[str, str]]) -> None:
    on_disk = {m.version: m for m in migrations}
    for version, (filename, checksum) in sorted(applied.items()):
        migration = on_disk.get(version)
        if migration is None:
            log.warning("applied migration %s is missing on disk", filename)
            continue
        if migration.checksum != checksum:
            raise MigrationError(
                f"{migration.name}: applied migration was edited (sha256 {checksum[:12]} recorded, "
                f"{migration.checksum[:12]} on disk); migrations are forward-only, add a new file instead")


async def _apply(conn: psycopg.AsyncConnection, migration: Migration) -> None:
    started = time.monotonic()
    mode = "transaction" if migration.transactional else "autocommit, statement by statement"
    log.info("applying %s (%s)", migration.name, mode)
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.text.encode())  # no parameters: simple protocol, many statements
                await _record(conn, migration, started)
        else:
            statements = migration.statements()
            for number, stmt in enumerate(statements, 1):
                match = _CREATE_INDEX_RE.match(_strip_comments(stmt))
                if match:
                    await _drop_if_invalid(conn, match[1])
                log.debug("%s: statement %d/%d", migration.name, number, len(statements))
                await conn.execute(stmt.encode())
            await _record(conn, migration, started)
    except psycopg.Error as exc:
        raise MigrationError(f"{migration.name}: {type(exc).__name__}: {exc}") from exc
    log.info("applied %s in %.2fs", migration.name, time.monotonic() - started)


async def _record(conn: psycopg.AsyncConnection, migration: Migration, started: float) -> None:
    await conn.execute(
        "INSERT INTO public.schema_migrations (version, filename, checksum, duration_ms) VALUES (%s, %s, %s, %s)",
        [migration.version, migration.name, migration.checksum, int((time.monotonic() - started) * 1000)])


async def _index_is_invalid(conn: psycopg.AsyncConnection, name: str) -> bool:
    cur = await conn.execute(
        """SELECT NOT i.indisvalid
             FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = %s AND n.nspname = current_schema()""", [name])
    row = await cur.fetchone()
    return bool(row and row[0])


async def _drop_if_invalid(conn: psycopg.AsyncConnection, name: str) -> bool:
    if not await _index_is_invalid(conn, name):
        return False
    log.warning("index %s is INVALID (failed concurrent build); dropping it to rebuild", name)
    await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
    return True


async def _repair_invalid_indexes(conn: psycopg.AsyncConnection, applied: list[Migration]) -> None:
    """Rebuild INVALID indexes that an applied migration defines (a build that failed after it was recorded)."""
    for migration in applied:
        if migration.transactional:
            continue
        for name, stmt in migration.index_statements().items():
            if await _drop_if_invalid(conn, name):
                try:
                    await conn.execute(stmt.encode())
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.name}: rebuilding index {name}: {exc}") from exc
                log.info("rebuilt index %s", name)
