"""tests/support/servers.py: a private server counts as started when it answers a real request, not when its port
opens (PostgreSQL accepts connections while it starts, only to refuse them: "the database system is starting
up"), and one that dies while starting says so at once."""

import sys

import pytest

from tests.support.servers import NatsServer
from tests.support.services import nats_answers

# Listens at once; for its first second it hangs up on every connection, then it speaks enough NATS to PONG.
SLOW_TO_ANSWER = r"""
import socket, sys, time
ready_at = time.monotonic() + 1.0
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
while True:
    conn, _ = server.accept()
    with conn:
        if time.monotonic() < ready_at:
            continue
        stream = conn.makefile("rwb")
        stream.write(b'INFO {"server_id":"fake"}\r\n')
        stream.flush()
        stream.readline()
        stream.write(b"PONG\r\n")
        stream.flush()
"""


class SlowToAnswer(NatsServer):
    name = "slow-to-answer"

    def command(self) -> list[str]:
        return [sys.executable, "-c", SLOW_TO_ANSWER, str(self.port)]


class DiesAtStart(NatsServer):
    name = "dies-at-start"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('cannot start'); sys.exit(3)"]


def test_start_returns_once_the_server_answers_not_when_its_port_opens():
    with SlowToAnswer() as server:
        assert nats_answers(server.url)  # at once, no retry: start() already waited for this


def test_a_server_that_exits_while_starting_fails_at_once_with_its_output():
    server = DiesAtStart()
    try:
        with pytest.raises(AssertionError, match="exited with 3 while starting:\n.*cannot start"):
            server.start()
    finally:
        server.cleanup()
