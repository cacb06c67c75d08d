"""Third-party clients for the interoperability tests, and what they need: where scripts/test installed them
(mcp-remote and node-wot from npm, openapi-python-client in a virtualenv of its own; see scripts/lib.sh), and a
throwaway TLS certificate for a hub served over HTTPS.

A client that is not installed skips its test on a developer's machine and fails it under CI (`CI=true`), where
scripts/test must have installed it: a green CI run never hides a client that was not tried.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("UAIP_CLIENTS_CACHE") or ROOT / ".cache")


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere: `what` is not installed."""
    message = f"{what} is not installed (scripts/test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def node() -> str:
    path = shutil.which("node")
    if path is None:
        missing("node")
    return path


def node_modules() -> Path:
    """The node_modules folder holding mcp-remote and node-wot."""
    path = Path(os.environ.get("UAIP_NODE_MODULES") or CACHE / "npm" / "node_modules")
    if not all((path / name / "package.json").is_file()
               for name in ("mcp-remote", "@node-wot/core", "@node-wot/binding-http")):
        missing(f"mcp-remote and node-wot (npm, in {path})")
    return path


def openapi_client_venv() -> Path:
    """The virtualenv with openapi-python-client (and what the clients it generates import)."""
    path = Path(os.environ.get("UAIP_OPENAPI_CLIENT_VENV") or CACHE / "openapi-python-client")
    if not (path / "bin" / "openapi-python-client").is_file():
        missing(f"openapi-python-client (in {path})")
    return path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1 and localhost, valid for a day; the certificate is its own CA,
    so a client trusts it by taking the certificate file as its CA bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uaip-hub test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "hub.crt", directory / "hub.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
