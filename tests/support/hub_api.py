"""The hub's API as tests drive it, the same calls through Flask's test client or over HTTP to a real gunicorn."""

from __future__ import annotations

import uuid

import requests


def token(hub_url_or_client, client_id, secret):
    """An access token for a client: over HTTP when given the hub's URL, else through the Flask test client."""
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    if isinstance(hub_url_or_client, str):
        return requests.post(f"{hub_url_or_client}/api/v1/auth/token", data=data, timeout=10).json()["access_token"]
    return hub_url_or_client.post("/api/v1/auth/token", data=data).json["access_token"]


class Api:
    """The same calls through Flask's test client or through HTTP to a real gunicorn."""

    def __init__(self, target, access_token):
        self.target = target
        self.headers = {"Authorization": f"Bearer {access_token}"}

    def call(self, method, path, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if isinstance(self.target, str):
            r = requests.request(method, f"{self.target}/api/v1{path}", headers=headers, timeout=40, **kwargs)
            return r.status_code, (r.json() if r.content else None), r.headers
        r = self.target.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)
        return r.status_code, r.json, r.headers

    def register(self, device_id=None):
        device_id = device_id or f"relay-{uuid.uuid4().hex[:12]}"
        status, body, _ = self.call("POST", "/devices", json={"device_id": device_id, "name": "relay test",
                                                               "device_type": "sim"})
        assert status == 201, body
        return body

    def command(self, device_id, query="", headers=None, **body):
        return self.call("POST", f"/devices/{device_id}/command{query}", json={"command": "echo", **body},
                         headers=headers or {})

    def status(self, message_id):
        return self.call("GET", f"/messages/{message_id}")[1]["status"]

    def device_status(self, device_id):
        return self.call("GET", f"/devices/{device_id}")[1]["status"]
