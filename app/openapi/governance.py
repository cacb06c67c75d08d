"""The OpenAPI paths and schemas of governance: client management, token revocation and introspection, the audit
log, and the dynamic registration and authorization endpoints of desktop agents."""

from __future__ import annotations

from typing import Any

from app.auth.tokens import SCOPES
from app.openapi.common import (
    _COMMON_HEADERS,
    AUTHED,
    BEARER,
    LIMIT,
    LOCATION,
    OFFSET,
    WITH_BODY,
    _body,
    _errors,
    _html,
    _json,
    _model_schemas,
    _op,
    _page,
    _param,
    _ref,
)
from app.schemas.resources import (
    OBJECT,
    TIMESTAMP,
    object_schema,
)
from app.web.urls import API_PREFIX


def _client_schemas() -> dict[str, Any]:
    """Client management, token revocation and introspection, the audit log (docs/clients.md)."""
    from app.api.clients import ClientCreate, ClientUpdate, SecretRotation

    secret = object_schema({
        "secret_id": {"type": "string"},
        "created_at": TIMESTAMP,
        "expires_at": {**TIMESTAMP, "type": ["string", "null"], "description": "null: no expiry."},
        "last_used_at": {**TIMESTAMP, "type": ["string", "null"],
                         "description": "Last token request with it (to the minute); null: never."},
    })
    client = object_schema({
        "client_id": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
        "disabled": {"type": "boolean"},
        "created_at": TIMESTAMP,
        "secrets": {"type": "array", "items": secret, "maxItems": 2, "description": "Live secrets, oldest first."},
    })
    token_form = object_schema(
        {"token": {"type": "string", "description": "An access token (or a refresh token) of this hub."},
         "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
         "client_id": {"type": "string"}, "client_secret": {"type": "string"}},
        required=["token"],
        description="Client credentials in HTTP Basic (client_secret_basic) or in the body (client_secret_post).",
    )
    return {
        "Client": client,
        "ClientWithSecret": {"allOf": [client, object_schema({"client_secret": {
            "type": "string", "description": "Shown once."}})]},
        "ClientList": _page("clients", "Client"),
        "NewSecret": object_schema({"secret_id": {"type": "string"},
                                    "client_secret": {"type": "string", "description": "Shown once."}}),
        **_model_schemas(ClientCreate, ClientUpdate, SecretRotation),
        "TokenForm": token_form,
        "Introspection": object_schema(
            {"active": {"type": "boolean"}, "scope": {"type": "string"}, "client_id": {"type": "string"},
             "sub": {"type": "string"}, "aud": {"type": "string", "description": "Only when the token has one."},
             "exp": {"type": "integer"}, "iat": {"type": "integer"}, "jti": {"type": "string"},
             "token_type": {"type": "string", "enum": ["Bearer"]}},
            required=["active"],
            description="RFC 7662: only `active: false` for a token that is not valid now (or another client's).",
        ),
        "AuditEntry": object_schema({
            "id": {"type": "integer"},
            "at": TIMESTAMP,
            "actor": {"type": "string", "description": "`client:<client_id>`, `operator:<email>` or `cli`."},
            "action": {"type": "string", "description": "`<kind>.<verb>`, e.g. `client.create`, `command.submit`."},
            "target": {"type": "string", "description": "`<kind>:<id>`."},
            "request_id": {"type": ["string", "null"]},
            "details": OBJECT,
        }),
        "AuditPage": object_schema({
            "entries": {"type": "array", "items": _ref("AuditEntry")},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next (older) page."},
        }),
    }


def _client_paths() -> dict[str, Any]:
    p = API_PREFIX
    client_id = _param("client_id", "path", {"type": "string", "maxLength": 128}, "Client id.")
    admin = dict(tag="clients", security=BEARER, scope="admin")
    no_store = {"Cache-Control": {"description": "no-store", "schema": {"type": "string"}}}
    token_form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": _ref("TokenForm")},
                                                "application/json": {"schema": _ref("TokenForm")}}}
    client_auth = [{}, {"clientBasic": []}]
    oauth_errors = {
        "400": _json(_ref("OAuthError"), "invalid_request (no `token`), or unauthorized_client (another "
                     "client's token, without admin)."),
        "401": _json(_ref("OAuthError"), "invalid_client; `WWW-Authenticate` is set."),
        **_errors("405", "413", "429", "500", "503"),
    }
    query = [_param(name, "query", {"type": "string"}, text) for name, text in (
        ("actor", "Exactly this actor."), ("action", "Exactly this action."), ("target", "Exactly this target."))]
    query += [
        _param("from", "query", {"type": "string", "format": "date-time"}, "Entries at or after (RFC 3339)."),
        _param("to", "query", {"type": "string", "format": "date-time"}, "Entries before (RFC 3339)."),
        LIMIT,
        _param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page."),
    ]
    return {
        f"{p}/clients": {
            "get": _op("List clients (never a secret)", {"200": _json(_ref("ClientList"), "A page of clients."),
                                                          **_errors("400", *AUTHED)},
                       parameters=[LIMIT, OFFSET], operationId="listClients", **admin),
            "post": _op("Create a client", {
                "201": _json(_ref("ClientWithSecret"), "Created; `client_secret` is shown only here.",
                             {**LOCATION, **no_store}),
                **_errors(*WITH_BODY, *AUTHED)}, requestBody=_body("ClientCreate"), operationId="createClient",
                **admin),
        },
        f"{p}/clients/{{client_id}}": {
            "parameters": [client_id],
            "get": _op("Get a client", {"200": _json(_ref("Client"), "The client."), **_errors(*AUTHED)},
                       operationId="getClient", **admin),
            "patch": _op("Change name, scopes or disabled", {
                "200": _json(_ref("Client"), "The client after the change."), **_errors(*WITH_BODY, *AUTHED)},
                description="Removing a scope or disabling revokes every token the client holds; renaming or adding "
                            "scopes revokes nothing.",
                requestBody=_body("ClientUpdate"), operationId="updateClient", **admin),
            "delete": _op("Delete a client (its tokens are revoked)",
                          {"204": {"description": "Deleted.", "headers": _COMMON_HEADERS}, **_errors(*AUTHED)},
                          operationId="deleteClient", **admin),
        },
        f"{p}/clients/{{client_id}}/secrets": {
            "parameters": [client_id],
            "post": _op("Rotate the client's secret", {
                "201": _json(_ref("NewSecret"), "The new secret, shown only here.", no_store),
                **_errors(*WITH_BODY, *AUTHED)},
                description="The previous secret works for `previous_secret_expires_in` seconds more; at most two "
                            "secrets are live (an older one ends at once).",
                requestBody=_body("SecretRotation", required=False), operationId="rotateClientSecret", **admin),
        },
        f"{p}/clients/{{client_id}}/revoke-tokens": {
            "parameters": [client_id],
            "post": _op("Revoke every token issued to the client so far",
                        {"204": {"description": "Revoked.", "headers": _COMMON_HEADERS}, **_errors(*AUTHED)},
                        description="Tokens issued before the call returned are refused (on every hub within 1 s); "
                                    "tokens issued 1 s or more after it work.",
                        operationId="revokeClientTokens", **admin),
        },
        f"{p}/auth/revoke": {
            "post": _op("Revoke a token (RFC 7009)", {
                "200": {"description": "Revoked, or nothing to revoke (unknown or expired token).",
                        "headers": {**_COMMON_HEADERS, **no_store}},
                **oauth_errors}, tag="auth", security=client_auth, requestBody=token_form, operationId="revokeToken",
                description="An access token, or a sign-in refresh token (its whole grant ends). A public client "
                            "(desktop agent) names itself with `client_id` alone."),
        },
        f"{p}/auth/introspect": {
            "post": _op("Introspect a token (RFC 7662)", {
                "200": _json(_ref("Introspection"), "The token's state.", no_store), **oauth_errors},
                tag="auth", security=client_auth, requestBody=token_form, operationId="introspectToken"),
        },
        f"{p}/audit": {
            "get": _op("Read the audit log, newest first", {"200": _json(_ref("AuditPage"), "A page of entries."),
                                                            **_errors("400", *AUTHED)},
                       tag="audit", security=BEARER, scope="admin", parameters=query, operationId="listAudit",
                       description="Append-only: no method changes it (405)."),
        },
    }


def _authorization_schemas() -> dict[str, Any]:
    client = {
        "client_name": {"type": "string", "maxLength": 200},
        "redirect_uris": {"type": "array", "minItems": 1, "maxItems": 10,
                          "items": {"type": "string", "maxLength": 2000},
                          "description": "http://127.0.0.1 or http://localhost (any port) or https URIs."},
        "grant_types": {"type": "array", "items": {"type": "string", "enum": ["authorization_code", "refresh_token"]}},
        "response_types": {"type": "array", "items": {"type": "string", "enum": ["code"]}},
        "token_endpoint_auth_method": {"type": "string", "enum": ["none"]},
        "scope": {"type": "string"},
    }
    return {
        "ClientRegistrationRequest": object_schema(
            client, required=["redirect_uris"],
            description="RFC 7591 client metadata; public clients only. Unknown members are ignored.",
        ),
        "ClientRegistration": object_schema(
            {"client_id": {"type": "string"}, "client_id_issued_at": {"type": "integer"}, **client},
            required=["client_id", "client_id_issued_at", "client_name", "redirect_uris", "grant_types",
                      "response_types", "token_endpoint_auth_method"],
        ),
    }


def _authorization_paths() -> dict[str, Any]:
    p = API_PREFIX
    redirect = {"description": "To the console's sign-in (302, then back here) or to the client's redirect URI "
                "(303) with `code` and `state`, or with `error` (access_denied, invalid_request, invalid_scope, "
                "invalid_target, unsupported_response_type).", "headers": {"Location": {"schema": {"type": "string"}}}}
    query = [
        _param(name, "query", {"type": "string"}, description, required=name in ("client_id", "redirect_uri"))
        for name, description in (
            ("response_type", "`code`."), ("client_id", "From registration."),
            ("redirect_uri", "As registered; loopback URIs with any port (RFC 8252 §7.3)."),
            ("code_challenge", "PKCE challenge (RFC 7636), 43-128 characters."),
            ("code_challenge_method", "`S256` (plain is refused)."), ("scope", "Space-separated scope names."),
            ("state", "Returned unchanged."), ("resource", "RFC 8707: the token's audience."),
        )
    ]
    return {
        f"{p}/auth/register": {"post": _op(
            "Register a desktop agent (RFC 7591 dynamic client registration, public clients)",
            {"201": _json(_ref("ClientRegistration"), "Registered; unused registrations expire after 24 hours."),
             "400": _json(_ref("OAuthError"), "invalid_redirect_uri / invalid_client_metadata"),
             **_errors("405", "413", "429", "500", "503")},
            tag="auth", operationId="registerClient", requestBody=_body("ClientRegistrationRequest"),
        )},
        f"{p}/auth/authorize": {
            "get": _op(
                "Authorization endpoint (authorization code with PKCE): operator sign-in and consent page",
                {"200": _html("The consent page: the client's name, the scopes, the resource."),
                 "302": redirect, "303": redirect,
                 "400": _html("Unknown client or unregistered redirect URI (never redirected)."),
                 **_errors("405", "429", "500", "503")},
                tag="auth", operationId="authorize", parameters=query,
                description="A browser page, not an API call: docs/console.md.",
            ),
            "post": _op(
                "The consent form's answer (approve or deny)",
                {"303": redirect,
                 "400": _html("Unknown client or unregistered redirect URI."),
                 "403": _html("No operator session, or the form's CSRF token is missing."),
                 **_errors("405", "413", "429", "500", "503")},
                tag="auth", operationId="authorizeDecision",
                requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "properties": {"decision": {"type": "string", "enum": ["approve", "deny"]},
                                                     "csrf_token": {"type": "string"}}}}}},
            ),
        },
    }
