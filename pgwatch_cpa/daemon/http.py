"""The aiohttp application: /metrics, /healthz, /readyz and an index page."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from pgwatch_cpa.alerts.engine import AlertEngine
from pgwatch_cpa.daemon.exposition import Exposition


class Readiness(Protocol):
    def ready(self) -> tuple[bool, list[str]]:
        """(ready, names of the targets still waiting for their first poll)."""
        ...


EXPOSITION = web.AppKey("exposition", Exposition)
READINESS = web.AppKey("readiness", Readiness)
ALERT_ENGINE: web.AppKey[AlertEngine | None] = web.AppKey("alert_engine")  # None when no rules are configured

_INDEX = """<html><head><title>pgwatch-cpa</title></head><body><h1>pgwatch-cpa</h1><ul>
<li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li><li><a href="alerts">/alerts</a></li></ul></body></html>"""


async def metrics(request: web.Request) -> web.Response:
    body, content_type = await request.app[EXPOSITION].render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, waiting = request.app[READINESS].ready()
    status = 200 if ready else 503
    return web.json_response({"ready": ready, "waiting_for": waiting}, status=status)


async def alerts(request: web.Request) -> web.Response:
    """Prometheus's /api/v1/alerts shape, so tools that read Prometheus alerts read ours."""
    engine = request.app[ALERT_ENGINE]
    body = engine.api_alerts() if engine is not None else {"status": "success", "data": {"alerts": []}}
    return web.json_response(body)


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=_INDEX, content_type="text/html")


def build_app(exposition: Exposition, readiness: Readiness, alert_engine: AlertEngine | None = None) -> web.Application:
    app = web.Application()
    app[EXPOSITION] = exposition
    app[READINESS] = readiness
    app[ALERT_ENGINE] = alert_engine
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/api/v1/alerts", alerts)
    return app
