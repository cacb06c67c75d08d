"""NATS auth callout: the JWTs a NATS server (>= 2.10) and the hub exchange to admit a device (docs/nats-security.md).

With `auth_callout` in its configuration the server does not check a connecting device's user and password
itself: it publishes an *authorization request* (a JWT signed by the server's own nkey, optionally encrypted to
the callout's x25519 key) on `$SYS.REQ.USER.AUTH`, and admits the connection only if the answer is an
*authorization response* signed by the configured issuer account whose embedded *user JWT* names the nkey the
server generated for this connection. The user JWT carries the connection's permissions.

This module is the pure part: nkey and JWT encoding, request decoding, response building; no I/O. The relay
answers the requests (app/cli/relay_callout.py). The claim shapes are those of github.com/nats-io/jwt v2
(`authorization_request`, `authorization_response`, `user`); `nkeys` signs, PyNaCl verifies and encrypts.
PyPI `nats-jwt` was not used: it does not know the two authorization claim types and pins old dependencies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing
import nkeys

CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
XKEY_HEADER = "Nats-Server-Xkey"
JWT_ALGORITHM = "ed25519-nkey"
MAX_REQUEST_BYTES = 64 * 1024  # a request is ~1 KB (a few KB with client certificates)
# A device's permissions last this long; then the server disconnects it and its client reconnects, which asks the
# hub again (a deleted device or a rotated secret is shut out by then at the latest).
USER_JWT_SECONDS = 3600

PREFIX_ACCOUNT = 0  # A…
PREFIX_SERVER = 13 << 3  # N…
PREFIX_USER = 20 << 3  # U…
PREFIX_CURVE = 23 << 3  # X…
PREFIX_SEED = 18 << 3  # S…
XKEY_VERSION = b"xkv1"
NONCE_BYTES = 24


class CalloutError(ValueError):
    """A key or a request the hub cannot use (bad encoding, checksum, signature, type, or decryption)."""


# --- nkeys: base32 of prefix byte(s) + raw key + CRC-16 ------------------------------------------------


def _b32decode(text: str) -> bytes:
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as exc:
        raise CalloutError("not an nkey (bad base32)") from exc


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _with_crc(raw: bytes) -> bytes:
    return raw + nkeys.crc16(bytearray(raw)).to_bytes(2, "little")


def _check_crc(raw: bytes) -> bytes:
    if len(raw) < 3 or nkeys.crc16(bytearray(raw[:-2])) != int.from_bytes(raw[-2:], "little"):
        raise CalloutError("not an nkey (checksum mismatch)")
    return raw[:-2]


def decode_public(key: str, prefix: int) -> bytes:
    """The 32 raw bytes of a public nkey that must be of type `prefix` (A…, N…, U…, X…)."""
    raw = _check_crc(_b32decode(key))
    if len(raw) != 33 or raw[0] != prefix:
        raise CalloutError("unexpected kind of nkey")
    return raw[1:]


def encode_public(raw: bytes, prefix: int) -> str:
    return _b32encode(_with_crc(bytes([prefix]) + raw))


def decode_seed(seed: str, prefix: int) -> bytes:
    """The 32 raw bytes of a seed (S…) of keys of type `prefix` (SA… an account, SX… a curve key)."""
    raw = _check_crc(_b32decode(seed.strip()))
    if len(raw) != 34:
        raise CalloutError("not a seed")
    kind = raw[0] & 0xF8
    key_type = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
    if kind != PREFIX_SEED or key_type != prefix:
        raise CalloutError("unexpected kind of seed")
    return raw[2:]


def encode_seed(raw: bytes, prefix: int) -> str:
    head = bytes([PREFIX_SEED | prefix >> 5, (prefix & 31) << 3])
    return _b32encode(_with_crc(head + raw))


class AccountKey:
    """The issuer account's key (seed `SA…`): signs user JWTs and authorization responses. Its public key (`A…`)
    is the `issuer` of the server's `auth_callout` block."""

    def __init__(self, seed: str) -> None:
        decode_seed(seed, PREFIX_ACCOUNT)  # an account seed, or a clear error (nkeys would take any seed)
        self._pair = nkeys.from_seed(bytearray(seed.strip().encode("ascii")))
        self.public_key: str = self._pair.public_key.decode("ascii")

    def sign(self, data: bytes) -> bytes:
        return self._pair.sign(data)

    @staticmethod
    def generate() -> str:
        """A new account seed (`uaip-hub nats-keys` prints one)."""
        return encode_seed(bytes(nacl.signing.SigningKey.generate()), PREFIX_ACCOUNT)


class CurveKey:
    """The callout's x25519 key (seed `SX…`), used when the server's `auth_callout` block names its public key
    (`xkey`): requests arrive sealed to it, and responses are sealed to the server's key (nkeys' `xkv1` box)."""

    def __init__(self, seed: str) -> None:
        self._private = nacl.public.PrivateKey(decode_seed(seed, PREFIX_CURVE))
        self.public_key: str = encode_public(bytes(self._private.public_key), PREFIX_CURVE)

    def _box(self, other: str) -> nacl.public.Box:
        return nacl.public.Box(self._private, nacl.public.PublicKey(decode_public(other, PREFIX_CURVE)))

    def open(self, data: bytes, sender: str) -> bytes:
        if len(data) <= len(XKEY_VERSION) + NONCE_BYTES or not data.startswith(XKEY_VERSION):
            raise CalloutError("the request is not sealed")
        try:
            return self._box(sender).decrypt(data[len(XKEY_VERSION):])
        except nacl.exceptions.CryptoError as exc:
            raise CalloutError("the request does not decrypt with this xkey") from exc

    def seal(self, data: bytes, recipient: str) -> bytes:
        return XKEY_VERSION + bytes(self._box(recipient).encrypt(data, os.urandom(NONCE_BYTES)))

    @staticmethod
    def generate() -> str:
        return encode_seed(bytes(nacl.public.PrivateKey.generate()), PREFIX_CURVE)


# --- JWT: base64url(header).base64url(claims).base64url(ed25519 signature of the first two) -------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CalloutError("bad base64 in the JWT") from exc


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def encode_jwt(claims: dict[str, Any], key: AccountKey) -> str:
    """A NATS v2 JWT signed by `key`: `iss` and `iat` set, `jti` the base32 SHA-512/256 of the claims without it
    (as the Go library computes it; the server does not check it)."""
    claims = {key_: value for key_, value in claims.items() if key_ != "jti"}
    claims.update(iss=key.public_key, iat=int(time.time()))
    claims["jti"] = _b32encode(hashlib.new("sha512_256", _json(claims)).digest())
    signed = f"{_b64(_json({'typ': 'JWT', 'alg': JWT_ALGORITHM}))}.{_b64(_json(claims))}"
    return f"{signed}.{_b64(key.sign(signed.encode('ascii')))}"


def decode_jwt(token: str, issuer_prefix: int) -> dict[str, Any]:
    """The claims of a NATS JWT whose signature verifies under its own `iss`, which must be of type
    `issuer_prefix`; refuses an expired one."""
    if len(token) > MAX_REQUEST_BYTES:
        raise CalloutError("the JWT is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise CalloutError("not a JWT")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, RecursionError) as exc:
        raise CalloutError("the JWT is not JSON") from exc
    if not isinstance(header, dict) or str(header.get("alg", "")).lower() != JWT_ALGORITHM:
        raise CalloutError("unexpected JWT algorithm")
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise CalloutError("the JWT names no issuer")
    verify_key = nacl.signing.VerifyKey(decode_public(claims["iss"], issuer_prefix))
    try:
        verify_key.verify(f"{parts[0]}.{parts[1]}".encode("ascii"), _unb64(parts[2]))
    except nacl.exceptions.BadSignatureError as exc:
        raise CalloutError("the JWT signature does not verify") from exc
    expires = claims.get("exp")
    if isinstance(expires, int) and 0 < expires < time.time():
        raise CalloutError("the JWT has expired")
    return claims


# --- the exchange -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthRequest:
    """What the hub needs from an authorization request."""

    user_nkey: str  # the key the server generated for this connection; the answer must name it
    server_id: str  # the answer's audience
    username: str
    password: str
    server_xkey: str | None  # the server's x25519 key when the request came sealed

    def __repr__(self) -> str:  # never the password, should a request end up in a log line
        return f"AuthRequest(user_nkey={self.user_nkey!r}, server_id={self.server_id!r}, username={self.username!r})"


def parse_request(data: bytes, xkey: CurveKey | None, header_xkey: str | None) -> AuthRequest:
    """Decode (and with an xkey, decrypt) the server's authorization request; CalloutError if it is not one."""
    if len(data) > MAX_REQUEST_BYTES:
        raise CalloutError("the request is too large")
    if xkey is not None:
        if not header_xkey:
            raise CalloutError("the request is not sealed, but NATS_CALLOUT_XKEY_SEED is set")
        data = xkey.open(data, header_xkey)
    try:
        token = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CalloutError("not a JWT") from exc
    claims = decode_jwt(token, PREFIX_SERVER)
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != "authorization_request":
        raise CalloutError("not an authorization request")
    user_nkey, server, options = nats.get("user_nkey"), nats.get("server_id"), nats.get("connect_opts") or {}
    if not isinstance(user_nkey, str) or not isinstance(server, dict) or not isinstance(options, dict):
        raise CalloutError("malformed authorization request")
    decode_public(user_nkey, PREFIX_USER)
    server_id = server.get("id")
    if not isinstance(server_id, str) or not server_id:
        raise CalloutError("the authorization request names no server")
    username, password, server_xkey = options.get("user"), options.get("pass"), server.get("xkey")
    return AuthRequest(
        user_nkey=user_nkey,
        server_id=server_id,
        username=username if isinstance(username, str) else "",
        password=password if isinstance(password, str) else "",
        server_xkey=server_xkey if isinstance(server_xkey, str) and server_xkey else None,
    )


def device_permissions(device_id: str) -> dict[str, Any]:
    """Exactly what a device may do: publish its acks, heartbeats and state reports and request its state;
    receive its commands, its desired state, and the replies to its requests (`_INBOX.>`, where NATS clients
    take their reply subjects)."""
    base = f"uaip.devices.{device_id}"
    return {
        "pub": {"allow": [f"{base}.acks", f"{base}.heartbeat", f"{base}.state.reported", f"{base}.state.get"]},
        "sub": {"allow": [f"{base}.commands", f"{base}.state.desired", "_INBOX.>"]},
    }


def user_jwt(request: AuthRequest, device_id: str, account: str, key: AccountKey,
             lifetime: int = USER_JWT_SECONDS) -> str:
    """The user JWT admitting `device_id`: bound to the connection's nkey, placed in `account` (its `aud`, the
    server-config way of naming the target account), named after the device, with the device's permissions."""
    claims = {
        "sub": request.user_nkey,
        "aud": account,
        "name": device_id,
        "exp": int(time.time()) + lifetime,
        # -1: no limit on subscriptions, data and payload beyond the server's own (as nats-io/jwt's NewUserClaims)
        "nats": {**device_permissions(device_id), "subs": -1, "data": -1, "payload": -1, "type": "user",
                 "version": 2},
    }
    return encode_jwt(claims, key)


def response(request: AuthRequest, key: AccountKey, *, jwt: str | None = None, error: str | None = None,
             xkey: CurveKey | None = None) -> bytes:
    """The signed authorization response: a user JWT (admit) or an error (refuse), sealed to the server's key
    when the request came sealed."""
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if jwt is not None:
        nats["jwt"] = jwt
    else:
        nats["error"] = error or "not authorized"
    token = encode_jwt({"sub": request.user_nkey, "aud": request.server_id, "nats": nats}, key).encode("ascii")
    if xkey is not None and request.server_xkey:
        return xkey.seal(token, request.server_xkey)
    return token
