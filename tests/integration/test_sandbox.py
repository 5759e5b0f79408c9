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
