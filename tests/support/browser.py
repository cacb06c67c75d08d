"""A real Chromium for console tests: Debian's /usr/bin/chromium driven by Playwright for Python.

`playwright install` cannot download browsers here, so the system Chromium is launched by path (scripts/test
installs it with apt when the console's browser tests run in CI). Screenshots of failing tests are kept under one
temporary directory whose path the failure prints.
"""

from __future__ import annotations

import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CHROMIUM = os.environ.get("UAIP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("UAIP_TEST_SCREENSHOTS") or tempfile.gettempdir()) / "uaip-console-screenshots"


def launch(playwright):
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
                             "scripts/test does so in CI")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class LoopbackCallback:
    """The desktop agent's redirect URI: an HTTP server on 127.0.0.1 that records the authorization response."""

    def __init__(self) -> None:
        received: list[dict[str, str]] = []
        self.received = received
        self.arrived = threading.Event()
        arrived = self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                if parts.path != "/callback":  # the browser also asks for /favicon.ico
                    self.send_error(404)
                    return
                received.append({key: values[0] for key, values in parse_qs(parts.query).items()})
                body = b"<!doctype html><title>Signed in</title><p>You can close this window.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                arrived.set()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/callback"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
