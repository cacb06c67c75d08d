"""JWT issue/verify and secret hashing, without any service."""

import time

import jwt
import pytest

from app.security import InvalidToken, decode_token, hash_secret, issue_token, verify_secret

SECRET = "k" * 64


def test_issued_token_round_trips_with_claims():
    token, expires_in = issue_token("client_1", ["device:read", "message:read"], SECRET, 600)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="uaip-hub")
    assert claims["sub"] == "client_1" and claims["scope"] == "device:read message:read"
    assert claims["exp"] - claims["iat"] == 600 == expires_in and claims["jti"]
    principal = decode_token(token, SECRET)
    assert principal.subject == "client_1" and principal.scopes == {"device:read", "message:read"}


def test_admin_implies_every_scope():
    token, _ = issue_token("c", ["admin"], SECRET, 60)
    assert decode_token(token, SECRET).has_scope("device:command")


def _forge(claims, key=SECRET, algorithm="HS256", headers=None):
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _claims(**overrides):
    now = int(time.time())
    return {"iss": "uaip-hub", "sub": "c", "scope": "admin", "iat": now, "exp": now + 60, "jti": "j", **overrides}


@pytest.mark.parametrize(
    "token",
    [
        _forge(_claims(), key="wrong-key" * 5),
        _forge(_claims(exp=int(time.time()) - 10)),
        _forge(_claims(iss="someone-else")),
        _forge({k: v for k, v in _claims().items() if k != "exp"}),
        _forge(_claims(), algorithm="HS512"),
        "not.a.jwt",
        "",
    ],
    ids=["bad-signature", "expired", "wrong-issuer", "no-exp", "hs512", "garbage", "empty"],
)
def test_invalid_tokens_are_rejected(token):
    with pytest.raises(InvalidToken):
        decode_token(token, SECRET)


def test_alg_none_is_rejected():
    import base64
    import json

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims())}."
    with pytest.raises(InvalidToken):
        decode_token(token, SECRET)


def test_secret_hash_verifies_only_the_right_secret():
    stored = hash_secret("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_secret(stored, "correct horse")
    assert verify_secret(stored, "correct horse")  # cached path
    assert not verify_secret(stored, "correct horsf")
    assert not verify_secret(None, "x")
    assert not verify_secret("garbage", "x")
    assert hash_secret("same") != hash_secret("same")  # salted
