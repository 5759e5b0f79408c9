"""The aiohttp application: /metrics, /healthz, /readyz and an index page."""

from __future__ import annotations

from aiohttp import web

from pgwatch_cpa.exposition import Exposition

EXPOSITION = web.AppKey("exposition", Exposition)
READINESS = web.AppKey("readiness", object)  # an object with .ready() -> (bool, list[str])

_INDEX = """<html><head><title>pgwatch-cpa</title></head><body><h1>pgwatch-cpa</h1><ul>
<li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li></ul></body></html>"""


async def metrics(request: web.Request) -> web.Response:
    body, content_type = await request.app[EXPOSITION].render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, waiting = request.app[READINESS].ready()  # type: ignore[attr-defined]
    status = 200 if ready else 503
    return web.json_response({"ready": ready, "waiting_for": waiting}, status=status)


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=_INDEX, content_type="text/html")


def build_app(exposition: Exposition, readiness: object) -> web.Application:
    app = web.Application()
    app[EXPOSITION] = exposition
    app[READINESS] = readiness
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
