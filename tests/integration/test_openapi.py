"""The OpenAPI document stays true: same routes as the app (both directions), and schemathesis finds no 5xx and no
response that breaks the document's own schemas.

schemathesis and hypothesis parse a lot of Python while the fuzz test runs, which CPython < 3.11.8 cannot do safely
beside another thread's parse: see tests/support/ast_guard.py and tests/unit/test_suite_setup.py.
"""

import json
import re

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app

IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def app_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/console"):
            continue  # the operator console's pages (docs/console.md), not part of the API
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(method, path) for method in rule.methods - IMPLICIT_METHODS}
    return routes


def document_routes(document) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_document_is_served_without_auth_and_describes_the_app(app, client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    document = r.json
    assert document["openapi"].startswith("3.")
    documented, served = document_routes(document), app_routes(app)
    assert served - documented == set(), "routes the document does not describe"
    assert documented - served == set(), "documented routes the app does not serve"


def test_every_operation_documents_its_errors_with_the_envelope(client):
    document = client.get("/api/v1/openapi.json").json
    envelope = {"$ref": "#/components/schemas/Error"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            # 302/303: the OAuth authorization endpoint and its form answer by redirecting back to the client
            assert {"200", "201", "202", "204", "302", "303"} & set(operation["responses"]), (method, path)
            if path.startswith(("/api/v1/system", "/.well-known")) or path in ("/metrics", "/api/v1/openapi.json"):
                continue
            for status in ("429", "500"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == envelope, (method, path, status)


def test_request_bodies_come_from_the_validation_models(client):
    from app.api.models import DeviceCreate

    schemas = client.get("/api/v1/openapi.json").json["components"]["schemas"]
    assert schemas["DeviceCreate"]["properties"].keys() == DeviceCreate.model_json_schema()["properties"].keys()
    assert schemas["DeviceCreate"]["additionalProperties"] is False


# --- schemathesis --------------------------------------------------------------------------------------------

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_app(hub_env):
    return create_app(hub_env)


@pytest.fixture(scope="module")
def admin_headers(fuzz_app, database):
    from app.auth.tokens import issue_token
    from app.infra.db import Database
    from app.services.clients import create_client

    pool = Database(database, maxconn=2)
    client, _secret = create_client(pool, "schemathesis", "admin")
    pool.close()
    settings = fuzz_app.config["SETTINGS"]
    token, _ = issue_token(client.client_id, ["admin"], settings.jwt_secret, 3600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(operations, headers, mode, max_examples=MAX_EXAMPLES) -> list[str]:
    """Run generated requests against each operation; returns the failures, one line per operation."""
    failures = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=max_examples, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def run(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            # Negative mode: an operation without inputs has no invalid request to make. In positive mode it means
            # the operation was never fuzzed: a failure, not a silent pass.
            if mode is not GenerationMode.NEGATIVE:
                failures.append(f"{operation.method.upper()} {operation.path}: no valid request could be generated")
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_api_conforms_to_its_document(fuzz_schema, admin_headers, mode):
    """Every served operation, MAX_EXAMPLES generated requests each (valid, then invalid input), admin token."""
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 8
    failures = _fuzz(operations, admin_headers, mode)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_mcp_endpoint_conforms_with_a_token_for_it(fuzz_app, fuzz_schema, admin_headers, mode):
    """The admin token above has no audience, so the MCP endpoint only ever answers it 401: fuzz it again with a
    token issued for it, which reaches the JSON-RPC parser and the methods."""
    from app.auth.tokens import decode_token, issue_token

    settings = fuzz_app.config["SETTINGS"]
    subject = decode_token(admin_headers["Authorization"].split()[1], settings.jwt_secret).subject
    token, _ = issue_token(subject, ["admin"], settings.jwt_secret, 3600, audience="http://localhost/api/v1/mcp")
    operations = [result.ok() for result in fuzz_schema.get_all_operations() if result.ok().path == "/api/v1/mcp"]
    assert len(operations) == 1
    failures = _fuzz(operations, {"Authorization": f"Bearer {token}"}, mode, max_examples=4 * MAX_EXAMPLES)
    assert not failures, "\n\n".join(failures)


def test_security_is_oauth2_client_credentials_with_each_routes_scope(client):
    """What a client generator needs to fetch tokens by itself: where (the token endpoint), how (client
    credentials) and which scope each route needs."""
    document = client.get("/api/v1/openapi.json").json
    scheme = document["components"]["securitySchemes"]["oauth2"]
    flow = scheme["flows"]["clientCredentials"]
    assert scheme["type"] == "oauth2" and flow["tokenUrl"] == "/api/v1/auth/token"
    assert set(flow["scopes"]) == {"device:read", "device:write", "device:command", "message:read", "admin"}
    paths = document["paths"]
    assert paths["/api/v1/devices"]["get"]["security"] == [{"oauth2": ["device:read"]}]
    assert paths["/api/v1/devices"]["post"]["security"] == [{"oauth2": ["device:write"]}]
    assert paths["/api/v1/devices/{device_id}/commands"]["get"]["security"] == [
        {"deviceBasic": []}, {"oauth2": ["device:read"]}]
    assert paths["/api/v1/device-types/{device_type}"]["put"]["security"] == [{"oauth2": ["admin"]}]
    referenced = {scope for item in paths.values() for operation in item.values() if isinstance(operation, dict)
                  for requirement in operation.get("security", []) for scope in requirement.get("oauth2", [])}
    assert referenced <= set(flow["scopes"])
    assert "bearerAuth" not in json.dumps(document)


def test_the_token_request_is_described_as_a_form_only(client):
    """A body under two media types makes openapi-python-client generate a module that does not import; the
    endpoint still reads JSON (tests/integration/test_auth.py)."""
    token = client.get("/api/v1/openapi.json").json["paths"]["/api/v1/auth/token"]["post"]
    assert list(token["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
