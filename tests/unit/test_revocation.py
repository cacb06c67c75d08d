"""The pure parts of revocation and signing keys: cutoff arithmetic, the per-process copy's refresh, `kid`."""

from __future__ import annotations

import jwt
import pytest

from app.auth.revocation import SNAPSHOT_SECONDS, Revocations, RevocationState, new_cutoff
from app.auth.tokens import InvalidToken, SigningKeys, decode_token, issue_token, key_id

SECRET = "unit-test-secret-" + "x" * 32


def test_cutoff_is_the_next_whole_second():
    assert new_cutoff(100.0) == 101 and new_cutoff(100.99) == 101


def test_cutoff_refuses_every_token_issued_before_it_returns_and_none_a_second_later():
    """A revocation written at W and returning before cutoff(W): tokens issued at t < cutoff carry iat = floor(t)
    < cutoff (refused); tokens issued at t >= W + 1 carry iat >= cutoff (honoured)."""
    for written in (100.0, 100.3, 100.999):
        cutoff = new_cutoff(written)
        state = RevocationState(cutoffs={"c": cutoff})
        for issued in (99.5, written - 0.2, written, cutoff - 0.001):
            assert state.refuses("c", None, int(issued)), (written, issued)
        for issued in (written + 1, written + 1.5, written + 30):
            assert not state.refuses("c", None, int(issued)), (written, issued)


def test_state_refuses_denied_tokens_and_knows_nothing_of_other_clients():
    state = RevocationState(cutoffs={"a": 200}, tokens={"jti-1": 500})
    assert state.refuses("b", "jti-1", 300)
    assert not state.refuses("b", "jti-2", 100)
    assert not state.refuses("b", None, 100)


def test_without_redis_the_copy_of_postgresql_is_at_most_a_second_old():
    now = [0.0]
    loads = []
    states = iter([RevocationState(), RevocationState(cutoffs={"c": 10})])

    def load():
        loads.append(now[0])
        return next(states)

    store = Revocations(None, load, clock=lambda: now[0])
    assert not store.is_revoked("c", "j", 5)
    now[0] = SNAPSHOT_SECONDS * 0.9
    assert not store.is_revoked("c", "j", 5)  # still the first copy
    assert loads == [0.0]
    now[0] = SNAPSHOT_SECONDS
    assert store.is_revoked("c", "j", 5)
    assert len(loads) == 2


def test_a_failing_database_keeps_the_last_copy():
    now = [0.0]
    calls = []

    def load():
        calls.append(now[0])
        if len(calls) > 1:
            raise RuntimeError("database down")
        return RevocationState(cutoffs={"c": 10})

    store = Revocations(None, load, clock=lambda: now[0])
    assert store.is_revoked("c", None, 5)
    now[0] = 5.0
    assert store.is_revoked("c", None, 5)
    assert len(calls) == 2


def test_tokens_name_their_key_and_previous_keys_verify():
    old, new = SECRET, SECRET + "-new"
    token = issue_token("c", ["device:read"], SigningKeys(old), 60)[0]
    assert jwt.get_unverified_header(token)["kid"] == key_id(old)
    assert key_id(old) != key_id(new) and len(key_id(old)) == 16
    assert decode_token(token, SigningKeys(new, (old,))).subject == "c"
    with pytest.raises(InvalidToken):
        decode_token(token, SigningKeys(new))
    forged = jwt.encode({"iss": "uaip-hub", "sub": "c", "iat": 1, "exp": 2**40}, old, algorithm="HS256",
                        headers={"kid": key_id(new)})
    with pytest.raises(InvalidToken):  # names the new key but was signed with the old one
        decode_token(forged, SigningKeys(new, (old,)))


def test_principal_carries_what_revocation_needs():
    token = issue_token("client-1", ["admin"], SECRET, 60)[0]
    principal = decode_token(token, SECRET)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert principal.token_id == claims["jti"] and principal.issued_at == claims["iat"]
    assert principal.expires_at == claims["exp"] and principal.client_id == "client-1"
