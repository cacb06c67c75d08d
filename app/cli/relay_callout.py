"""The relay's answer to the NATS server's auth callout (NATS_AUTH_CALLOUT=true; docs/nats-security.md).

A device connects to NATS with user = its device id and password = its device secret. The server asks the hub
(`$SYS.REQ.USER.AUTH`, answered by one relay of the queue group); the relay checks the pair against PostgreSQL
as HTTP Basic auth does and answers with a user JWT that grants exactly that device's subjects, or with an error
(wrong secret, unknown or deleted device), which the server turns into a refused connection.

Answers run on a small pool of threads (messaging.serve): a secret check costs a scrypt hash (tens of
milliseconds, every wrong guess in full), which must not hold up the NATS thread that receives acks.
"""

from __future__ import annotations

import logging

from app.core.config import Settings
from app.infra.db import Database, DatabaseUnavailable
from app.infra.nats_callout import XKEY_HEADER, AccountKey, CalloutError, CurveKey, parse_request, response, user_jwt
from app.services.nats_auth import device_may_connect
from app.telemetry import metrics

log = logging.getLogger("app.cli.relay")

REFUSED = "invalid device credentials"
UNAVAILABLE = "device credentials cannot be checked now"


class CalloutResponder:
    """Answers authorization requests. Built at start-up, so a bad key stops the relay with a clear line."""

    def __init__(self, db: Database, settings: Settings) -> None:
        if not settings.nats_callout_issuer_seed:
            raise CalloutError("NATS_CALLOUT_ISSUER_SEED is not set")
        self.db = db
        self.account = settings.nats_callout_account
        try:
            self.key = AccountKey(settings.nats_callout_issuer_seed)
        except CalloutError as exc:
            raise CalloutError(f"NATS_CALLOUT_ISSUER_SEED is not a valid account seed ({exc})") from None
        try:
            self.xkey = CurveKey(settings.nats_callout_xkey_seed) if settings.nats_callout_xkey_seed else None
        except CalloutError as exc:
            raise CalloutError(f"NATS_CALLOUT_XKEY_SEED is not a valid curve seed ({exc})") from None

    def answer(self, data: bytes, headers: dict | None) -> bytes | None:
        """The response to one request (worker thread), or None when the request cannot be read: without the
        connection's user key there is nobody to address an answer to, and the server refuses on its timeout."""
        try:
            request = parse_request(data, self.xkey, (headers or {}).get(XKEY_HEADER))
        except CalloutError as exc:
            metrics.nats_auth_callouts_total.labels(outcome="invalid").inc()
            log.warning("NATS auth callout request not understood", extra={"reason": str(exc)})
            return None
        device_id = request.username
        try:
            allowed = device_may_connect(self.db, device_id, request.password)
        except DatabaseUnavailable as exc:
            metrics.nats_auth_callouts_total.labels(outcome="refused").inc()
            log.warning("NATS connection refused: database unavailable",
                        extra={"device_id": device_id, "error": str(exc)})
            return response(request, self.key, error=UNAVAILABLE, xkey=self.xkey)
        if not allowed:
            metrics.nats_auth_callouts_total.labels(outcome="refused").inc()
            log.warning("NATS connection refused: invalid device credentials", extra={"device_id": device_id})
            return response(request, self.key, error=REFUSED, xkey=self.xkey)
        metrics.nats_auth_callouts_total.labels(outcome="allowed").inc()
        log.info("device admitted to NATS", extra={"device_id": device_id})
        return response(request, self.key, jwt=user_jwt(request, device_id, self.account, self.key), xkey=self.xkey)

    def busy(self) -> None:
        """A request arrived while CALLOUT_WAITING_MAX others wait: left unanswered (the server refuses it on its
        timeout and the device's client retries)."""
        metrics.nats_auth_callouts_total.labels(outcome="busy").inc()
