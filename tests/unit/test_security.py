"""JWT issue/verify and secret hashing, without any service."""

import datetime
import time
import types

import jwt
import pytest

from app.auth.secrets import hash_secret, verify_secret
from app.auth.tokens import InvalidToken, VerifiedTokens, decode_token, issue_token

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


# --- the per-process cache of verified tokens (VerifiedTokens) ---------------------------------------------


@pytest.fixture()
def clock(monkeypatch):
    """One fake wall clock for the cache and for PyJWT's own expiry check."""
    fake = types.SimpleNamespace(now=time.time())
    monkeypatch.setattr("app.auth.tokens.time", types.SimpleNamespace(time=lambda: fake.now, monotonic=time.monotonic))

    class FakeDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(fake.now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", FakeDatetime)
    return fake


def _outcome(verify, token):
    try:
        return verify(token)
    except InvalidToken:
        return "refused"


def test_token_cache_refuses_exactly_what_the_verifier_refuses_at_every_moment(clock):
    start = int(clock.now)
    tokens = [
        issue_token("c", ["device:read"], SECRET, 10)[0],
        _forge(_claims(iat=start, exp=start + 5.5)),  # PyJWT reads exp as int(): expired from start + 5 on
        _forge(_claims(iat=start + 3, exp=start + 8)),  # not valid before its iat
        _forge(_claims(nbf=start + 2, iat=start, exp=start + 8)),
        _forge(_claims(iat=start, exp=start + 8), key="wrong-key" * 5),
        _forge(_claims(iat=start, exp=start + 8, iss="someone-else")),
        _forge(_claims(iat=start, exp=start + 8), algorithm="HS512"),
        _forge({k: v for k, v in _claims(iat=start).items() if k != "exp"}),
        "not.a.jwt",
    ]
    cache = VerifiedTokens(SECRET)
    accepted = set()
    for offset in (-1, 0, 0.5, 1.99, 2, 2.5, 3, 4.99, 5, 5.4, 5.5, 6, 7.999, 8, 9.99, 10, 10.001, 60):
        clock.now = start + offset
        for token in tokens:
            expected = _outcome(lambda t: decode_token(t, SECRET), token)
            assert _outcome(cache.principal, token) == expected, (offset, tokens.index(token))
            assert _outcome(cache.principal, token) == expected  # asked again: answered from the cache
            if expected != "refused":
                accepted.add(tokens.index(token))
    assert accepted == {0, 1, 2, 3}  # each valid token was accepted (and so cached) at some moment


def test_token_cache_answers_a_known_token_without_verifying_it_again(clock, monkeypatch):
    token = issue_token("c", ["admin"], SECRET, 60)[0]
    cache = VerifiedTokens(SECRET)
    calls = []
    monkeypatch.setattr("app.auth.tokens.decode_token", lambda t, s: calls.append(t) or decode_token(t, s))
    first, second = cache.principal(token), cache.principal(token)
    assert first == second and first.subject == "c" and calls == [token]
    assert _outcome(cache.principal, token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) == "refused"
    assert len(calls) == 2  # a different string is a different token: verified, and refused


def test_token_cache_is_per_secret(clock):
    token = issue_token("c", ["admin"], SECRET, 60)[0]
    assert VerifiedTokens(SECRET).principal(token).subject == "c"
    assert _outcome(VerifiedTokens("another-secret" * 4).principal, token) == "refused"


def test_token_cache_stays_bounded(clock):
    cache = VerifiedTokens(SECRET, max_entries=3)
    tokens = [issue_token(f"c{i}", ["admin"], SECRET, 60 + i)[0] for i in range(5)]
    for token in tokens:
        cache.principal(token)
    assert len(cache._entries) == 3 and list(cache._entries) == tokens[2:]  # the oldest went first
    clock.now += 62  # tokens 0-2 have expired (exp = whole seconds): they go before any live one does
    cache.principal(issue_token("late", ["admin"], SECRET, 60)[0])
    assert list(cache._entries)[:2] == tokens[3:]
    assert [_outcome(cache.principal, t) != "refused" for t in tokens] == [False, False, False, True, True]
