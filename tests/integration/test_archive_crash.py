"""kill -9 of the archiver at each step of a batch; the next run completes with no row lost and none duplicated.

The archiver runs in a subprocess whose crash hook SIGKILLs the process at the second time it reaches the step
(so one batch is already applied), on PostgreSQL 15 and 18.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.archive.archiver import CRASH_POINTS, archive
from tests.integration.archive_data import (
    PLANTED_DUE,
    TABLES,
    conn_utc,
    due_ids,
    exported_rows,
    fresh_database,
    ids_of,
    plant,
    row_json,
)

pytestmark = pytest.mark.integration

RUNNER = """
import asyncio, os, signal, sys
from pgwatch_cpa.cpa.archive.archiver import archive

dsn, url, policy, point = sys.argv[1:5]
reached = 0

def crash_hook(name):
    global reached
    if name == point:
        reached += 1
        if reached == 2:
            os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(archive(dsn, url, policies=[policy], batch_size=2, crash_hook=crash_hook))
print("finished without reaching the crash point twice")
"""


@pytest.fixture
def dsn(pg_server) -> str:
    return fresh_database(pg_server)


def pending(dsn: str) -> int:
    with conn_utc(dsn) as conn:
        return conn.execute("SELECT count(*) FROM archive_batches WHERE state = 'pending'").fetchone()[0]


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("policy", ["audit_logs", "documents"])
async def test_a_crash_at_each_step_loses_and_duplicates_nothing(dsn, tmp_path, point, policy):
    plant(dsn)
    before = row_json(dsn, TABLES[policy], PLANTED_DUE[policy])
    archive_dir = tmp_path / "archive"
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    crashed = subprocess.run([sys.executable, str(runner), dsn, archive_dir.as_uri(), policy, point],
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    assert pending(dsn) == 1  # the batch it was in
    applied_before_crash = exported_rows_of_applied(dsn)
    assert len(applied_before_crash) == 2  # the first batch (batch_size 2) was applied

    report = await archive(dsn, archive_dir.as_uri(), policies=[policy], batch_size=2)
    result = report.results[0]
    assert not report.failed and pending(dsn) == 0
    if point == "apply_executed":  # manifest and export were complete: the batch is applied, not redone
        assert (result.recovered, result.discarded) == (1, 0)
    else:  # no manifest (or only its .tmp): the files go, the rows come again in a new batch
        assert (result.recovered, result.discarded) == (0, 1)
    lines = exported_rows(archive_dir)[policy]  # fails on a stray export, .tmp or manifest-less file
    assert sorted(ids_of(lines)) == sorted(PLANTED_DUE[policy])  # every row once
    assert sorted(lines) == sorted(before.values())  # as it was
    assert due_ids(dsn)[policy] == set()
    assert exported_rows_of_applied(dsn) == set(PLANTED_DUE[policy])


def exported_rows_of_applied(dsn: str) -> set[str]:
    """Row ids the journal says were applied, read from the exports it points at."""
    ids: set[str] = set()
    with conn_utc(dsn) as conn:
        for (manifest_url,) in conn.execute("SELECT manifest_url FROM archive_batches WHERE state = 'applied'"):
            path = Path(urlparse(manifest_url).path)
            manifest = ex.parse_manifest(path.read_bytes())
            batch = ids_of(list(ex.decode((path.parent / manifest["export"]).read_bytes(), manifest).lines))
            assert not ids & set(batch), "a row applied in two batches"
            ids.update(batch)
    return ids
