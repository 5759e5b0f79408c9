"""``pgwatch-cpa demo``: the daemon watching throwaway PostgreSQL and Redis servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.daemon import Daemon
from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox

log = logging.getLogger(__name__)


async def run_demo(listen: str, duration: float | None) -> int:
    with PostgresSandbox() as pg, RedisSandbox() as rd:
        settings = settings_from_mapping(
            {"listen": listen, "interval": "5s",
             "postgres": [{"name": "cpa", "dsn": pg.dsn()}],
             "redis": [{"name": "cache", "url": rd.url}]},
            environ={},
        )
        print(f"pgwatch-cpa demo\n  metrics:    http://{listen}/metrics\n"
              f"  readiness:  http://{listen}/readyz\n  postgres:   {pg.dsn(password='****')} "
              f"(PostgreSQL {pg.build.version if pg.build else '?'})\n  redis:      {rd.url}\n"
              "Ctrl-C stops everything.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if duration:
            loop.call_later(duration, stop.set)
        try:
            await Daemon(settings).serve(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
    return 0
