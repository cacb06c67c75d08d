"""System endpoints (docs/api.md, "System endpoints"): health, liveness, readiness. No authentication; the rate
limiter exempts every path under /api/v1/system/health. The probes, the cache and the drain state live in
app/web/health.py."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.core.timestamps import timestamp
from app.web import worker_hooks as lifecycle
from app.web.health import get_health

blueprint = Blueprint("system", __name__)


def _answer(body: dict, status: int = 200):
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/system/health")
def health():
    """Dependency report (cached ≤ 2 s per worker); 503 only when PostgreSQL is down."""
    report = get_health().report()
    return _answer(
        {
            "status": report.status,
            "version": current_app.config["UAIP_VERSION"],
            "uptime_seconds": round(lifecycle.uptime_seconds(), 3),
            "timestamp": timestamp(report.checked_at),
            "dependencies": [dep.as_dict() for dep in report.dependencies],
        },
        503 if report.status == "unhealthy" else 200,
    )


@blueprint.get("/system/health/liveness")
def liveness():
    """The process answers HTTP; touches no dependency."""
    return _answer({"status": "alive"})


@blueprint.get("/system/health/readiness")
def readiness():
    """200 ready; 503 draining (shutdown began) or not_ready (PostgreSQL unreachable)."""
    status = get_health().readiness()
    return _answer({"status": status}, 200 if status == "ready" else 503)
