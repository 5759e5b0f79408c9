"""The aiohttp application: /metrics, /healthz, /readyz, /alerts, /report, an index page, and basic auth when the
web config asks for it. The server it runs in is hardened against slow and hostile clients in ``http_guard``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from aiohttp import web

from pgwatch_cpa.alerts.engine import AlertEngine
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.web_config import BasicAuth
from pgwatch_cpa.secrets import describe

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # never behind basic auth: liveness and readiness probes


class Readiness(Protocol):
    def ready(self) -> tuple[bool, list[str]]:
        """(ready, names of the targets still waiting for their first poll)."""
        ...


ReportFormat = Literal["json", "html", "md"]


class ReportSource(Protocol):
    async def render(self, fmt: ReportFormat) -> tuple[bytes, str]:
        """The current report in ``fmt`` and its content type."""
        ...


EXPOSITION = web.AppKey("exposition", Exposition)
READINESS = web.AppKey("readiness", Readiness)
ALERT_ENGINE: web.AppKey[AlertEngine | None] = web.AppKey("alert_engine")  # None when no rules are configured
REPORTS: web.AppKey[ReportSource | None] = web.AppKey("reports")
REPORT_FORMATS: dict[str, ReportFormat] = {"json": "json", "html": "html", "md": "md"}
_ACCEPTED: dict[str, ReportFormat] = {"text/html": "html", "application/json": "json", "text/markdown": "md"}

_INDEX = """<html><head><title>pgwatch-cpa</title></head><body><h1>pgwatch-cpa</h1><ul>
<li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li><li><a href="alerts">/alerts</a></li>
<li><a href="report?format=html">/report</a></li></ul></body></html>"""


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


async def report(request: web.Request) -> web.Response:
    """The performance report: ``?format=json|html|md``, else by Accept (text/html, application/json), else JSON."""
    source = request.app[REPORTS]
    if source is None:
        raise web.HTTPNotFound(text="no report source\n")
    wanted = request.query.get("format")
    if wanted is not None and wanted not in REPORT_FORMATS:
        return web.json_response({"error": f"format must be one of {', '.join(REPORT_FORMATS)}"}, status=400)
    fmt = REPORT_FORMATS[wanted] if wanted is not None else negotiate(request.headers.get("Accept"))
    try:
        body, content_type = await source.render(fmt)
    except Exception as exc:  # request boundary: the daemon goes on; the reason is secret-free
        return web.json_response({"error": f"the report could not be built: {describe(exc)}"}, status=500)
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def negotiate(accept: str | None) -> ReportFormat:
    """The known media type the client prefers (highest q, then first listed); JSON when none is named."""
    best: tuple[float, int, ReportFormat] | None = None
    for index, part in enumerate((accept or "").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        fmt = _ACCEPTED.get(media.lower())
        if fmt is None:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and (best is None or (q, -index) > (best[0], -best[1])):
            best = (q, index, fmt)
    return best[2] if best else "json"


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=_INDEX, content_type="text/html")


def basic_auth_middleware(auth: BasicAuth) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every path but OPEN_PATHS needs a user of ``basic_auth_users``; else 401 with a Basic challenge."""

    @web.middleware
    async def require_user(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path in OPEN_PATHS or await auth.check(request.headers.get("Authorization")):
            return await handler(request)
        raise web.HTTPUnauthorized(text="Unauthorized\n",
                                   headers={"WWW-Authenticate": 'Basic realm="pgwatch-cpa", charset="UTF-8"'})

    return require_user


def build_app(exposition: Exposition, readiness: Readiness, alert_engine: AlertEngine | None = None,
              reports: ReportSource | None = None, auth: BasicAuth | None = None) -> web.Application:
    app = web.Application(middlewares=[basic_auth_middleware(auth)] if auth is not None else [])
    app[EXPOSITION] = exposition
    app[READINESS] = readiness
    app[ALERT_ENGINE] = alert_engine
    app[REPORTS] = reports
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/report", report)
    return app


# ------------------------------------------------------------------ the server: connection cap, header deadline, logs
