"""The NATS auth callout's JWTs and keys (app/infra/nats_callout.py), as pure logic. The exchange with a real NATS
server is tests/integration/test_nats_auth_callout.py; here: the encodings round-trip, tampering is caught, and a
device's grant is exactly its own subjects."""

import base64
import json
import time

import nacl.signing
import pytest

from app.infra.nats_callout import (
    PREFIX_SERVER,
    PREFIX_USER,
    AccountKey,
    AuthRequest,
    CalloutError,
    CurveKey,
    decode_jwt,
    device_permissions,
    encode_public,
    parse_request,
    response,
    user_jwt,
)


class ServerKey(AccountKey):
    """A server's key (N…), signing requests as a NATS server does."""

    def __init__(self) -> None:
        self._signing = nacl.signing.SigningKey.generate()
        self.public_key = encode_public(bytes(self._signing.verify_key), PREFIX_SERVER)

    def sign(self, data: bytes) -> bytes:
        return self._signing.sign(data).signature


def user_key() -> str:
    return encode_public(bytes(nacl.signing.SigningKey.generate().verify_key), PREFIX_USER)


def server_request(server: ServerKey, user: str, password: str, **claims) -> bytes:
    from app.infra.nats_callout import encode_jwt

    nats = {"type": "authorization_request", "version": 2, "user_nkey": claims.pop("user_nkey", user_key()),
            "server_id": {"name": "n1", "host": "127.0.0.1", "id": server.public_key},
            "connect_opts": {"user": user, "pass": password, "protocol": 1}}
    return encode_jwt({"sub": "A" * 56, "aud": "nats-authorization-request", "nats": nats, **claims},
                      server).encode()


def corrupt(seed: str) -> str:
    """One character changed mid-key (the last character also holds two padding bits, so changing it may not)."""
    return seed[:20] + ("B" if seed[20] != "B" else "C") + seed[21:]


def test_a_request_is_read_and_the_answer_names_the_connection_and_the_server():
    server, issuer = ServerKey(), AccountKey(AccountKey.generate())
    request = parse_request(server_request(server, "sensor.1", "s3cret"), None, None)
    assert (request.username, request.password, request.server_id) == ("sensor.1", "s3cret", server.public_key)
    assert "s3cret" not in repr(request)
    answer = response(request, issuer, jwt=user_jwt(request, "sensor.1", "UAIP", issuer)).decode()
    claims = decode_jwt(answer, 0)
    assert claims["sub"] == request.user_nkey and claims["aud"] == server.public_key
    assert claims["iss"] == issuer.public_key and claims["nats"]["type"] == "authorization_response"
    user = decode_jwt(claims["nats"]["jwt"], 0)
    assert user["sub"] == request.user_nkey and user["aud"] == "UAIP" and user["name"] == "sensor.1"
    assert time.time() < user["exp"] <= time.time() + 3600
    refused = decode_jwt(response(request, issuer, error="no").decode(), 0)
    assert refused["nats"]["error"] == "no" and "jwt" not in refused["nats"]


def test_a_device_is_granted_exactly_its_own_subjects():
    assert device_permissions("sensor.1") == {
        "pub": {"allow": ["uaip.devices.sensor.1.acks", "uaip.devices.sensor.1.heartbeat",
                          "uaip.devices.sensor.1.state.reported", "uaip.devices.sensor.1.state.get"]},
        "sub": {"allow": ["uaip.devices.sensor.1.commands", "uaip.devices.sensor.1.state.desired", "_INBOX.>"]},
    }


def test_tampered_forged_and_malformed_requests_are_refused():
    server = ServerKey()
    token = server_request(server, "d", "p").decode()
    head, body, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["nats"]["connect_opts"]["user"] = "someone-else"
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    for bad in (f"{head}.{forged_body}.{signature}", "not.a.jwt", "x" * 70_000, "a.b", token.replace(".", "")):
        with pytest.raises(CalloutError):
            parse_request(bad.encode(), None, None)
    with pytest.raises(CalloutError):  # issued by a server key, where a user key is expected
        decode_jwt(token, PREFIX_USER)
    with pytest.raises(CalloutError):  # expired
        parse_request(server_request(server, "d", "p", exp=int(time.time()) - 10), None, None)
    with pytest.raises(CalloutError):  # not a user key for the connection
        parse_request(server_request(server, "d", "p", user_nkey=server.public_key), None, None)


def test_an_encrypted_exchange_round_trips_and_a_plain_request_is_refused_when_an_xkey_is_set():
    server_xkey, hub_xkey = CurveKey(CurveKey.generate()), CurveKey(CurveKey.generate())
    server, issuer = ServerKey(), AccountKey(AccountKey.generate())
    plain = server_request(server, "d1", "p1")
    sealed = server_xkey.seal(plain, hub_xkey.public_key)
    request = parse_request(sealed, hub_xkey, server_xkey.public_key)
    assert request.username == "d1"
    request = AuthRequest(request.user_nkey, request.server_id, "d1", "p1", server_xkey.public_key)
    answer = response(request, issuer, error="no", xkey=hub_xkey)
    assert decode_jwt(server_xkey.open(answer, hub_xkey.public_key).decode(), 0)["nats"]["error"] == "no"
    with pytest.raises(CalloutError):
        parse_request(plain, hub_xkey, None)


def test_seeds_of_the_wrong_kind_or_with_a_bad_checksum_are_refused():
    account, curve = AccountKey.generate(), CurveKey.generate()
    assert account.startswith("SA") and curve.startswith("SX") and len(account) == len(curve) == 58
    for bad in (curve, corrupt(account), "SA" + "A" * 56, ""):
        with pytest.raises(CalloutError):
            AccountKey(bad)
    with pytest.raises(CalloutError):
        CurveKey(account)


def test_the_relay_refuses_to_start_with_a_seed_whose_checksum_is_wrong(capsys):
    from app.cli.relay import run_relay
    from app.core.config import load_settings

    seed = AccountKey.generate()
    broken = corrupt(seed)
    settings = load_settings({"DATABASE_URL": "postgresql://x/y", "NATS_URL": "nats://x", "UAIP_ENV": "development",
                              "NATS_AUTH_CALLOUT": "true", "NATS_CALLOUT_ISSUER_SEED": broken})
    assert run_relay(None, None, settings) == 1
    assert "NATS_CALLOUT_ISSUER_SEED is not a valid account seed" in capsys.readouterr().err
