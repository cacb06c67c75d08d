"""The suite never inherits the hub's configuration from the shell that runs it.

A developer's `OTEL_EXPORTER_OTLP_ENDPOINT`, `RATE_LIMIT_BURST=5` or `UAIP_PUBLIC_URL` would otherwise reach every
in-process app (create_app layers its overrides on os.environ) and every gunicorn or relay the tests start, and
change what the tests observe. tests/conftest.py removes them before any fixture runs; each test states what it
needs through `hub_env` and its own overrides. The suite's own knobs (UAIP_TEST_*, UAIP_IMAGE_*, the tool paths
scripts/test exports) stay.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping

HUB_CONFIGURATION = re.compile(
    r"^(?:OTEL_\w*"
    r"|UAIP_(?!TEST_|IMAGE_|CHECKOV$|VENV$|TOOLS_VENV$|LOCAL_STATE$)\w*"
    r"|RATE_LIMIT_\w*|JWT_\w*|SERVER_\w*|NATS_\w*|MAX_\w*"
    r"|DATABASE_URL|REDIS_URL|LOG_LEVEL|LOG_FORMAT|CORS_ORIGINS|TRUSTED_PROXY_HOPS|HEARTBEAT_TIMEOUT_SECONDS"
    r"|DEFAULT_MESSAGE_TTL_MS|GRACEFUL_TIMEOUT_SECONDS|EVENT_RETENTION_HOURS|STATE_HISTORY_HOURS"
    r"|AUDIT_RETENTION_DAYS|PROMETHEUS_MULTIPROC_DIR)$"
)


def scrub_hub_configuration(environ: MutableMapping[str, str]) -> list[str]:
    """Remove every variable the hub reads as configuration from `environ`; return the names removed."""
    removed = sorted(name for name in environ if HUB_CONFIGURATION.match(name))
    for name in removed:
        del environ[name]
    return removed
