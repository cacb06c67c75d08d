"""How the relay subscribes to device acks and heartbeats (`python -m bench.subjects`; part of `bench.run`).

A device id may contain dots, and NATS `*` matches one token, so `uaip.devices.*.acks` misses `sensor.1`. Two
ways to see every id were measured on a private nats-server, with traffic shaped like a busy hub: for every ack
the hub also publishes one command envelope (`uaip.devices.{id}.commands`, ~400 bytes), half the device ids
have one dot:

- `depth`: one subscription per possible token count, `uaip.devices.*.acks` … `uaip.devices.*×64.acks` (and the
  same for heartbeats), 128 subscriptions;
- `tail`: one subscription `uaip.devices.>`, dropping whatever does not end in `.acks` / `.heartbeat` in the
  relay (so the relay also receives every command envelope).

Figures: time until the relay-side subscriber has every ack, messages and bytes it had to receive, and CPU
seconds used by the subscriber's NATS thread and by nats-server. `baseline` is the old single-token pattern (it
receives only the undotted half, shown for scale).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

from app.infra.messaging import Messaging, encode
from app.infra.subjects import relay_subscriptions
from tests.support.servers import NatsServer
from tests.support.services import wait_for

ENVELOPE_PARAMS = {"setpoint": 21.5, "mode": "heat", "schedule": [{"at": "06:00", "value": 20}] * 4}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _traffic(count: int) -> list[tuple[str, bytes]]:
    """`count` acks and `count` command envelopes, interleaved; half the device ids have a dot."""
    messages = []
    for i in range(count):
        device_id = f"bench-{i % 100}" if i % 2 else f"bench.{i % 100}"
        message_id = str(uuid.uuid4())
        envelope = {"message_id": message_id, "device_id": device_id, "command": "set", "params": ENVELOPE_PARAMS,
                    "qos": 1, "priority": 5, "created_at": "2026-01-01T00:00:00.000Z",
                    "expires_at": "2026-01-01T00:05:00.000Z", "request_id": str(uuid.uuid4())}
        messages.append((f"uaip.devices.{device_id}.commands", encode(envelope)))
        messages.append((f"uaip.devices.{device_id}.acks", encode({"message_id": message_id, "status": "completed"})))
    return messages


def _measure(server: NatsServer, strategy: str, traffic: list[tuple[str, bytes]]) -> dict:
    received = {"acks": 0, "messages": 0, "bytes": 0}
    lock = threading.Lock()
    loop_thread_cpu: list[float] = []

    def handler(subject: str, data: bytes) -> None:
        with lock:
            received["messages"] += 1
            received["bytes"] += len(data)
            if subject.endswith(".acks"):  # what the relay keeps; the rest is dropped
                received["acks"] += 1

    subscriber = Messaging([server.url], name=f"bench-{strategy}")
    publisher = Messaging([server.url], name="bench-publisher")
    try:
        assert subscriber.wait_connected(10) and publisher.wait_connected(10)
        if strategy == "depth":
            subjects = relay_subscriptions()
        elif strategy == "tail":
            subjects = ["uaip.devices.>"]
        else:
            subjects = ["uaip.devices.*.acks", "uaip.devices.*.heartbeat"]
        for subject in subjects:
            subscriber.subscribe(subject, handler, queue="bench")
        subscriber.flush()

        async def thread_cpu() -> None:
            loop_thread_cpu.append(time.thread_time())

        expected = sum(1 for subject, _ in traffic if subject.endswith(".acks"))
        if strategy == "baseline":
            expected = sum(1 for subject, _ in traffic if subject.endswith(".acks") and subject.count(".") == 3)
        subscriber.run(thread_cpu())
        server_cpu = _cpu_seconds(server.process.pid)
        started = time.perf_counter()

        async def publish_all() -> None:
            nc = publisher.client
            for subject, data in traffic:
                await nc.publish(subject, data)
            await nc.flush()

        publisher.run(publish_all(), timeout=120)
        wait_for(lambda: received["acks"] >= expected, timeout=120, interval=0.005, message=f"{strategy}: every ack")
        seconds = time.perf_counter() - started
        subscriber.run(thread_cpu())
        return {
            "subscriptions": len(subjects), "acks": received["acks"], "seconds": round(seconds, 3),
            "acks_per_s": round(received["acks"] / seconds), "messages_received": received["messages"],
            "bytes_received": received["bytes"],
            "subscriber_nats_thread_cpu_s": round(loop_thread_cpu[1] - loop_thread_cpu[0], 3),
            "nats_server_cpu_s": round(_cpu_seconds(server.process.pid) - server_cpu, 3),
        }
    finally:
        subscriber.close()
        publisher.close()


def run(count: int = 50_000, rounds: int = 3) -> dict:
    traffic = _traffic(count)
    figures: dict = {}
    with NatsServer() as server:
        for _ in range(rounds):  # alternate, so a busy moment on the machine does not favour one strategy
            for strategy in ("depth", "tail", "baseline"):
                figures.setdefault(strategy, []).append(_measure(server, strategy, traffic))
    return {strategy: min(results, key=lambda r: r["seconds"]) | {"rounds": len(results)}
            for strategy, results in figures.items()}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
