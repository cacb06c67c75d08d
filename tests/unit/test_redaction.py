"""The redaction pre-check may skip the credential patterns only for text none of them could match."""

import re

import pytest

from app.telemetry.logs import _SECRET_KEYS, MAYBE_SECRET, SECRET_PATTERNS, redact

SAMPLES = [
    "Authorization: Bearer abcdefgh", "basic dXNlcjpwYXNz", "x eyJhbGciOi.eyJzdWIiOi.sig", "client_secret=abcdef",
    '"password": "hunter22"', "postgresql://user:pass@host/db", "PWD=123456", "api-key: zzzzzz", "apikey=abcdef",
    "access_token=abcdef", "refresh_token: abcdef", "passwd=abcdef", "authorization=abcdef", "TOKEN: abcdef",
    "device_secret: 'abcdef'",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_every_credential_shape_passes_the_precheck_and_is_masked(text):
    assert any(pattern.search(text) for pattern, _ in SECRET_PATTERNS), "sample should exercise a pattern"
    assert MAYBE_SECRET.search(text)
    assert redact(text) != text


def test_every_secret_key_name_passes_the_precheck():
    for name in re.findall(r"[a-z_\[\]\-?]+", _SECRET_KEYS.strip("(?:)")):
        plain = name.replace("[_-]?", "_")
        assert MAYBE_SECRET.search(plain), plain


def test_ordinary_text_is_untouched():
    for text in ("/api/v1/devices/thermo-1", "curl/8.1", "GET /api/v1/devices 200", "10.0.0.7"):
        assert not MAYBE_SECRET.search(text) and redact(text) == text
