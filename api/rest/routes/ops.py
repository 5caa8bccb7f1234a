"""The operator's probes: ``/healthz``, ``/readyz`` (public) and ``/metrics``
(``admin:metrics``), at the root, where orchestrators and Prometheus look for them
(``crashd.api.ops``). Not under ``/api/v1``: they are the process's, not the API's."""

from __future__ import annotations

import time

from quart import Blueprint, Response

from crashd.api import __version__
from crashd.api.ops import health, metrics
from crashd.api.rest.contract import json_response
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import Principal
from crashd.api.services import current_services
from crashd.api.wire import READY_PATH, SCOPE_ADMIN_METRICS

probes = Blueprint("probes", __name__)

NO_STORE = {"Cache-Control": "no-store"}


@probes.get("/healthz")
async def healthz() -> Response:
    """The process is up and serving HTTP (nothing else is checked: see /readyz)."""
    services = current_services()
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": int(time.monotonic() - services.started_monotonic),
        },
        headers=NO_STORE,
    )


@probes.get(READY_PATH)
async def readyz() -> Response:
    """200 when the engine ticks on time, the ledger commits and the feed accepts;
    503 with the reason of every failed check otherwise."""
    ready, body = await health.readiness(current_services())
    return json_response(body, status=200 if ready else 503, headers=NO_STORE)


@probes.get("/metrics")
@requires_scope(SCOPE_ADMIN_METRICS)
async def scrape(*, principal: Principal) -> Response:
    """Prometheus text format (``docs/prometheus.yml`` scrapes it with a bearer key)."""
    body = metrics.render(current_services())
    return Response(body, content_type=metrics.CONTENT_TYPE, headers=NO_STORE)
