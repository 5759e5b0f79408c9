"""The sandbox leaves no server process and no temp dir behind, whatever way it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return bool(stat) and stat.split(")")[-1].split()[0] != "Z"


def test_context_manager_cleans_up(pg_server, redis_server):
    with PostgresSandbox(build=pg_server.build) as pg, RedisSandbox(server=redis_server.server) as rd:
        pids, dirs = [pg.pid, rd.pid], [pg.tempdir, rd.tempdir]
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute("SHOW shared_preload_libraries").fetchone()[0] == "pg_stat_statements"
            assert conn.execute("SHOW track_io_timing").fetchone()[0] == "on"
        assert all(alive(p) for p in pids)
    assert not any(alive(p) for p in pids)
    assert not any(d.exists() for d in dirs)


@pytest.mark.parametrize("ending", ["sigterm", "sigint", "exception", "sigkill"])
def test_owner_process_ending_abruptly_cleans_up(tmp_path, ending):
    script = textwrap.dedent("""
        import sys, time
        from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox
        pg = PostgresSandbox().start()
        rd = RedisSandbox().start()
        print(pg.pid, rd.pid, pg.tempdir, rd.tempdir, flush=True)
        if sys.argv[1] == "exception":
            raise RuntimeError("boom")
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, ending], stdout=subprocess.PIPE, text=True)
    pg_pid, rd_pid, pg_dir, rd_dir = proc.stdout.readline().split()
    assert alive(int(pg_pid)) and alive(int(rd_pid))
    if ending != "exception":
        proc.send_signal({"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}[ending])
    proc.wait(30)
    deadline = time.monotonic() + 10
    while (alive(int(pg_pid)) or alive(int(rd_pid))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(int(pg_pid)) and not alive(int(rd_pid))
    if ending == "sigkill":
        # Nobody could clean up: the kernel killed the servers, the next sandbox sweeps the dead owner's dirs.
        with RedisSandbox():
            pass
    assert not Path(pg_dir).exists() and not Path(rd_dir).exists()


def test_kept_data_dir_is_reused_and_never_deleted(tmp_path, pg_server):
    # Under root the server user must reach the directory: /tmp itself is world-traversable, a 0700 pytest dir
    # is not, so the kept dir lives in a fresh world-traversable directory of its own.
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pgwatch-kept-"))
    base.chmod(0o755)
    kept = base / "data"
    try:
        with PostgresSandbox(build=pg_server.build, datadir=kept) as first:
            assert not first.reused
            with psycopg.connect(first.dsn(), autocommit=True) as conn:
                conn.execute("CREATE TABLE kept_marker (id int)")
        assert (kept / "PG_VERSION").exists(), "closing a sandbox never deletes a kept data dir"
        with PostgresSandbox(build=pg_server.build, datadir=kept) as second:
            assert second.reused
            with psycopg.connect(second.dsn()) as conn:  # this run's password works on the old cluster
                assert conn.execute("SELECT to_regclass('kept_marker') IS NOT NULL").fetchone()[0]
        (base / "junk").mkdir()
        (base / "junk" / "file").write_text("not a cluster")
        with pytest.raises(Exception, match="neither empty nor a PostgreSQL data directory"):
            PostgresSandbox(build=pg_server.build, datadir=base / "junk").start()
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
