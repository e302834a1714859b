"""The worker's HTTP server: the operator console, ``/metrics`` for Prometheus and ``/healthz``.

Faust's own web server is disabled (its routes are fixed at start-up); this aiohttp server runs inside the
worker's event loop as a Faust task, so the console sees live state without another process.
"""
from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics as M
from . import archive
from .cases import CaseStore
from .web.console import create_console_app
from .web.live import LiveHub

log = logging.getLogger("roadwatch.web")


class WorkerFleetView:
    """The console's view of the fleet, read from the GPS path's per-partition state."""

    def __init__(self, ctx):
        self.ctx = ctx

    def vehicles(self) -> list[dict]:
        states = self.ctx.gps_state
        out: list[dict] = []
        if states is None:
            return out
        reg = self.ctx.registry
        for e in list(states.entries.values()):
            for v in e.proc.vehicles_view():
                veh = reg.vehicles.get(v["plate"])
                if veh is not None:
                    v.setdefault("category", veh.category)
                    v.setdefault("enterprise_id", veh.enterprise_id)
                    v.setdefault("county", veh.county)
                out.append(v)
        return out

    def track(self, plate: str) -> list[dict]:
        return archive.recent_track(archive.open_archive(self.ctx.cfg), plate, 500)


def build_web_app(ctx) -> web.Application:
    async def metrics(_request):
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request):
        # not ready while an internal fault pauses a component (streams/retry.py): 503 with the reason
        faults = ctx.faults.reasons() if ctx.faults is not None else {}
        ready = bool(ctx.ready) and not faults
        return web.json_response({"ready": ready, "faults": faults}, status=200 if ready else 503)

    ctx.live = ctx.live or LiveHub()
    store = CaseStore(archive.open_archive(ctx.cfg), ctx.cfg, evidence_dir=ctx.data_dir / "evidence",
                      data_dir=ctx.data_dir)

    def case_actions(case_id, action, operator, reason=None, **kw):
        result = store.act(case_id, action, operator, reason, **kw)
        M.CASES.labels(action=action).inc()   # the funnel: review / confirm / dismiss / notify
        return result

    app = create_console_app(ctx.cfg, archive_path=ctx.cfg.archive_path, registry=ctx.registry,
                             live=ctx.live, fleet=WorkerFleetView(ctx), case_actions=case_actions)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_web(faust_app, ctx) -> web.AppRunner:
    app = build_web_app(ctx)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, ctx.cfg["web.host"], int(ctx.cfg["web.port"]))
    await site.start()
    ctx.web_address = runner.addresses[0][:2]       # the real port when web.port = 0
    log.info("console on %s:%s", *ctx.web_address)
    return runner
