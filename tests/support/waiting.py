"""`?wait=N` floods and kubelet-style probes against a real gunicorn (tests/process/test_wait_bounds.py and
bench/hardening.py): many parallel waiting commands, and liveness/readiness probed back to back meanwhile."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

PROBES = ("/api/v1/system/health/liveness", "/api/v1/system/health/readiness")


class Prober:
    """Liveness and readiness on fresh connections (as the kubelet probes), back to back, latencies kept as
    (path, seconds, status or None)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[tuple[str, float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in PROBES:
                started = time.perf_counter()
                try:
                    status = requests.get(self.url + path, timeout=15).status_code
                except requests.RequestException:
                    status = None
                self.latencies.append((path, time.perf_counter() - started, status))
            self._stop.wait(0.05)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)

    def worst(self, path: str | None = None) -> float:
        return max(seconds for p, seconds, _ in self.latencies if path is None or p == path)


def wait_command(base_url: str, auth: dict[str, str], device_id: str, wait: int) -> tuple[str, int, float, dict]:
    """One `POST …/command?wait=N` on a fresh connection: (the client's Authorization, status, seconds, body)."""
    started = time.perf_counter()
    r = requests.post(f"{base_url}/api/v1/devices/{device_id}/command?wait={wait}", headers=auth, timeout=wait + 30,
                      json={"command": "hold"})
    return auth["Authorization"], r.status_code, time.perf_counter() - started, r.json()


class Flood:
    """`per_client` parallel `?wait=N` commands from each client to one device; answers kept as they arrive."""

    def __init__(self, base_url: str, clients: list[dict[str, str]], per_client: int, device_id: str,
                 wait: int) -> None:
        jobs = [auth for auth in clients for _ in range(per_client)]
        self.results: list[tuple[str, int, float, dict]] = []
        self._pool = ThreadPoolExecutor(len(jobs))
        self._futures = [self._pool.submit(self._one, base_url, auth, device_id, wait) for auth in jobs]

    def _one(self, base_url, auth, device_id, wait) -> None:
        self.results.append(wait_command(base_url, auth, device_id, wait))

    def wait(self) -> list[tuple[str, int, float, dict]]:
        for future in self._futures:
            future.result(120)
        self._pool.shutdown()
        return self.results
