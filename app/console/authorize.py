"""The OAuth 2.0 authorization endpoint (RFC 6749 §4.1.1 with PKCE, RFC 7636): where a desktop agent sends its
operator's browser.

GET checks the request, signs the operator in if needed (the console's sign-in page, which comes back here) and
shows a consent page naming the client, the scopes and the resource. The consent form POSTs back here; approval
redirects to the client's redirect URI with a one-time `code` and the `state`, denial with
`error=access_denied`. A bad `client_id` or `redirect_uri` is shown as a page and never redirected (§4.1.2.1:
the browser must not be sent to an address nobody registered); every other error is redirected to the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import redirect, render_template, request, url_for

from app.console.base import console_blueprint
from app.console.session import ConsoleError, check_csrf, current_operator
from app.core.json_input import storable_text
from app.infra.db import get_db
from app.services import oauth
from app.services.operators import role_scopes
from app.web.urls import canonical_resource, public_base_url, resources

blueprint = console_blueprint("authorize", html_api_errors=False)  # at an API path: API errors stay JSON

CODE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
SCOPE_DESCRIPTIONS = {
    "device:read": "see devices, their state, types and events",
    "device:write": "register, change and delete devices",
    "device:command": "send commands to devices and set their desired state",
    "message:read": "read commands and their results",
    "admin": "everything, including API clients and device types",
}
PARAMS = ("response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "scope", "state",
          "resource")


class RedirectError(Exception):
    """An error the client learns through its redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class AuthorizationRequest:
    client: oauth.PublicClient
    redirect_uri: str
    state: str | None
    code_challenge: str
    scope: str | None
    resource: str | None
    params: dict[str, str]


def _redirect_to_client(redirect_uri: str, values: dict[str, str | None]):
    parts = urlsplit(redirect_uri)
    extra = urlencode({key: value for key, value in values.items() if value is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    response = redirect(urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _client_and_redirect(params) -> tuple[oauth.PublicClient, str]:
    client = oauth.find_client(get_db(), params.get("client_id", ""))
    if client is None:
        raise ConsoleError(400, "Unknown client_id: the application must register first (its registration may "
                                "have expired).")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or not oauth.redirect_uri_allowed(client.redirect_uris, redirect_uri):
        raise ConsoleError(400, "The redirect_uri is not one this application registered.")
    return client, redirect_uri


def _check(params) -> AuthorizationRequest:
    """ConsoleError for what must not redirect, RedirectError for the rest."""
    for name in PARAMS:
        if len(params.getlist(name)) > 1:
            raise ConsoleError(400, f"{name} is given more than once.")
        if not storable_text(params.get(name, "")):
            raise ConsoleError(400, f"{name} contains characters no request can have.")
    client, redirect_uri = _client_and_redirect(params)
    if params.get("response_type") != "code":
        raise RedirectError("unsupported_response_type", "Only response_type=code is supported.")
    if params.get("code_challenge_method") != "S256":
        raise RedirectError("invalid_request", "PKCE is required with code_challenge_method=S256.")
    challenge = params.get("code_challenge", "")
    if not CODE_CHALLENGE.match(challenge):
        raise RedirectError("invalid_request", "code_challenge must be 43-128 characters of [A-Za-z0-9._~-].")
    resource = params.get("resource")
    if resource is not None:
        canonical = canonical_resource(resource)
        if canonical not in resources():
            raise RedirectError("invalid_target", "The resource is not one this hub serves.")
        resource = canonical
    return AuthorizationRequest(client, redirect_uri, params.get("state"), challenge, params.get("scope"), resource,
                                {name: params[name] for name in PARAMS if params.get(name) is not None})


@blueprint.get("/auth/authorize")
def authorize():
    try:
        auth = _check(request.args)
    except RedirectError as exc:
        client, redirect_uri = _client_and_redirect(request.args)
        return _redirect_to_client(redirect_uri, {"error": exc.error, "error_description": exc.description,
                                                  "state": request.args.get("state")})
    operator = current_operator()
    if operator is None:
        return redirect(url_for("console.signin", next=request.full_path))
    scopes = oauth.granted_scopes(auth.scope, operator.role, auth.client)
    if not scopes:
        return _redirect_to_client(auth.redirect_uri, {"error": "invalid_scope", "state": auth.state,
                                                       "error_description": "None of the scopes can be granted."})
    narrowed = bool(auth.scope) and set(auth.scope.split()) - set(scopes)
    return render_template(
        "console/consent.html", page=None, auth=auth, scopes=scopes, narrowed=narrowed,
        resource=auth.resource or public_base_url(), role_scopes=role_scopes(operator.role),
        scope_descriptions=SCOPE_DESCRIPTIONS,
    )


@blueprint.post("/auth/authorize")
def authorize_decision():
    operator = current_operator()
    if operator is None:
        raise ConsoleError(403, "Sign in first.")
    check_csrf()
    try:
        auth = _check(request.form)
    except RedirectError as exc:
        client, redirect_uri = _client_and_redirect(request.form)
        return _redirect_to_client(redirect_uri, {"error": exc.error, "error_description": exc.description,
                                                  "state": request.form.get("state")})
    if request.form.get("decision") != "approve":
        return _redirect_to_client(auth.redirect_uri, {"error": "access_denied", "state": auth.state,
                                                       "error_description": "The operator denied access."})
    scopes = oauth.granted_scopes(auth.scope, operator.role, auth.client)
    if not scopes:
        return _redirect_to_client(auth.redirect_uri, {"error": "invalid_scope", "state": auth.state})
    code = oauth.approve(get_db(), auth.client, operator.email, scopes, auth.resource, auth.redirect_uri,
                         auth.code_challenge)
    return _redirect_to_client(auth.redirect_uri, {"code": code, "state": auth.state})
