"""Real `gunicorn` and `uaip-hub` subprocesses for process-level tests (signals, draining, restarts)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from tests.support.services import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _process_env(env: dict[str, str | None]) -> dict[str, str]:
    """PATH, HOME and LANG, then `env`; a None in `env` removes that variable."""
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    # The checkout under test wins over whatever copy of `app` is installed in the environment, and a developer's
    # .env in the checkout never reaches a test process.
    merged = {**base, "PYTHONPATH": str(ROOT), "UAIP_ENV_FILE": "", **env}
    return {key: value for key, value in merged.items() if value is not None}


class _Process:
    def __init__(self, args: list[str], env: dict[str, str | None], name: str, cwd: Path = ROOT) -> None:
        self.args = args
        self.env = _process_env(env)
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix=f"uaip-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json_lines(self) -> list[dict]:
        lines = []
        for line in self.output().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass
        return lines

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.log_path.unlink(missing_ok=True)


class HubServer(_Process):
    """`gunicorn -c gunicorn.conf.py wsgi:app` on a free port with the given environment; over HTTPS with
    `tls` = (certificate, key) PEM files (gunicorn's --certfile/--keyfile; clients verify against `self.verify`)."""

    def __init__(self, env: dict[str, str | None], workers: int = 2, threads: int = 4, cwd: Path = ROOT,
                 tls: tuple[Path, Path] | None = None, **extra: str) -> None:
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.verify: str | bool = str(tls[0]) if tls else True
        full_env = {
            **env, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(self.port),
            "SERVER_WORKERS": str(workers), "SERVER_THREADS": str(threads),
            # A private metrics directory: gunicorn.conf.py wipes it on start, and servers must not share one.
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="uaip-metrics-"), **extra,
        }
        # None: gunicorn.conf.py's per-instance default (tests of that default pass it).
        self.metrics_dir = Path(full_env["PROMETHEUS_MULTIPROC_DIR"]
                                or f"/tmp/uaip-metrics-{full_env.get('UAIP_INSTANCE') or self.port}")
        certificate = ["--certfile", str(tls[0]), "--keyfile", str(tls[1])] if tls else []
        super().__init__([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), *certificate, "wsgi:app"],
                         full_env, "gunicorn", cwd)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        """The master's live child processes (its workers), from /proc (Linux)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return {int(pid) for pid in children.read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            return set()

    def start(self):
        super().start()
        wait_for(self._answers, timeout=30, message=f"gunicorn on port {self.port}\n{self.output()[-2000:]}")
        return self

    def __exit__(self, *exc):
        super().__exit__(*exc)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _answers(self) -> bool:
        if not self.running():
            raise AssertionError(f"gunicorn exited early:\n{self.output()[-3000:]}")
        try:
            requests.get(f"{self.url}/api/v1/system/health/liveness", timeout=1, verify=self.verify)
            return True
        except requests.ConnectionError:
            return False


class Relay(_Process):
    """`uaip-hub relay` with the given environment."""

    def __init__(self, env: dict[str, str | None], cwd: Path = ROOT) -> None:
        super().__init__([str(BIN / "uaip-hub"), "relay"], env, "relay", cwd)


def start_relay(env: dict[str, str | None]) -> Relay:
    """Start `uaip-hub relay` and wait for its "relay started" line; fail with its output if it exits instead."""
    relay = Relay(env).start()
    wait_for(lambda: "relay started" in relay.output() or not relay.running(), timeout=30, message="relay start")
    assert relay.running(), relay.output()
    return relay


class Simulator(_Process):
    """`uaip-hub simulate ARGS`: simulated devices, registered through the API, talking to the hub over NATS."""

    def __init__(self, env: dict[str, str | None], args: list[str], cwd: Path = ROOT) -> None:
        super().__init__([str(BIN / "uaip-hub"), "simulate", *args], env, "simulate", cwd)
