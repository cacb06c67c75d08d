"""Operators and console sessions for tests: create an operator in the test database, sign in through the real
form (CSRF token read from the page, as a browser would send it)."""

from __future__ import annotations

import re
import secrets
import uuid

from app.services.operators import create_operator

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def new_operator(db, role: str = "admin") -> tuple[str, str]:
    """(email, password) of a new operator with `role`."""
    email = f"op-{uuid.uuid4().hex[:10]}@example.test"
    password = "pw-" + secrets.token_urlsafe(12)
    create_operator(db, email, role, password)
    return email, password


def csrf_from(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client, email: str, password: str):
    """Sign in through the form with the Flask test client (which keeps cookies); returns the POST's response."""
    page = client.get("/console/signin")
    assert page.status_code == 200
    return client.post("/console/signin", data={"email": email, "password": password,
                                                "csrf_token": csrf_from(page.get_data(as_text=True))})


def page_csrf(client, path: str = "/console/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    return csrf_from(page.get_data(as_text=True))
