"""Devices authenticated on NATS through the auth callout (docs/nats-security.md), against a real NATS server
>= 2.10 configured as the docs show, a real `uaip-hub relay` answering the callout, and real device connections
(nats-py) using the device id and secret as user and password."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.errors import Error as NatsError

from app import create_app
from app.infra.nats_callout import AccountKey, CurveKey
from app.infra.subjects import ack_subject, command_subject, heartbeat_subject
from tests.support.hub_api import Api, token
from tests.support.processes import start_relay
from tests.support.servers import CalloutNatsServer
from tests.support.services import wait_for

pytestmark = pytest.mark.process


class CalloutHub:
    """A callout NATS server, a relay answering it, and the API publishing commands to that server."""

    def __init__(self, relay_env, hub_env, api_client_factory, xkey: bool = False) -> None:
        self.seed = AccountKey.generate()
        self.xkey_seed = CurveKey.generate() if xkey else None
        xkey_public = CurveKey(self.xkey_seed).public_key if xkey else None
        self.server = CalloutNatsServer(AccountKey(self.seed).public_key, xkey_public).start()
        env = {"NATS_URL": self.server.hub_url, "NATS_AUTH_CALLOUT": "true", "NATS_CALLOUT_ISSUER_SEED": self.seed}
        if self.xkey_seed:
            env["NATS_CALLOUT_XKEY_SEED"] = self.xkey_seed
        self.relay = start_relay({**relay_env, **env})
        app = create_app({**hub_env, "NATS_URL": self.server.hub_url})
        client = app.test_client()
        self.api = Api(client, token(client, *api_client_factory()))

    def close(self) -> None:
        self.relay.stop()
        self.server.cleanup()


@pytest.fixture(scope="module")
def hub(relay_env, hub_env, api_client_factory):
    hub = CalloutHub(relay_env, hub_env, api_client_factory)
    yield hub
    hub.close()


async def connect(hub: CalloutHub, user: str, password: str, errors: list | None = None):
    async def on_error(exc):
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(hub.server.url, user=user, password=password, allow_reconnect=False,
                              max_reconnect_attempts=0, connect_timeout=5, error_cb=on_error)


async def refused(hub: CalloutHub, user: str, password: str) -> str:
    try:
        nc = await connect(hub, user, password)
    except (NatsError, OSError) as exc:
        return str(exc) or type(exc).__name__
    await nc.close()
    raise AssertionError(f"{user!r} was admitted to NATS")


async def wait_async(condition, timeout: float, message: str) -> None:
    """Poll a (synchronous) condition from inside the event loop, letting the connection work meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out: {message}")
        await asyncio.sleep(0.05)


def test_a_device_with_its_secret_talks_on_its_own_subjects_and_the_relay_applies_its_ack(hub):
    api = hub.api
    device, other = api.register(), api.register()
    device_id, other_id = device["device_id"], other["device_id"]

    async def scenario():
        errors: list[str] = []
        nc = await connect(hub, device_id, device["device_secret"], errors)
        try:
            commands = await nc.subscribe(command_subject(device_id))
            await nc.flush()
            # Its commands reach it ...
            status, accepted, _ = api.command(device_id, params={"n": 1})
            assert status == 202, accepted
            envelope = json.loads((await commands.next_msg(timeout=10)).data)
            assert envelope["message_id"] == accepted["message_id"]
            # ... its heartbeat and its acks reach the relay, which applies them.
            await nc.publish(heartbeat_subject(device_id), b'{"status": "online"}')
            await nc.publish(ack_subject(device_id), json.dumps(
                {"message_id": accepted["message_id"], "status": "completed", "result": {"ok": True}}).encode())
            await nc.flush()
            await wait_async(lambda: api.status(accepted["message_id"]) == "completed", 20, "ack applied")
            await wait_async(lambda: api.device_status(device_id) == "online", 20, "heartbeat applied")
            assert errors == []

            # Another device's subjects are out of bounds: publishing its ack and reading its commands are refused.
            _, foreign, _ = api.command(other_id)
            await nc.publish(ack_subject(other_id), json.dumps(
                {"message_id": foreign["message_id"], "status": "completed"}).encode())
            await nc.subscribe(command_subject(other_id))
            await nc.subscribe("uaip.devices.>")
            await nc.flush()
            await wait_async(lambda: len(errors) >= 3, 10, "permission violations reported")
            assert any("publish" in e and ack_subject(other_id) in e for e in errors), errors
            assert any("subscription" in e and command_subject(other_id) in e for e in errors), errors
            assert any("subscription" in e and "uaip.devices.>" in e for e in errors), errors
            await asyncio.sleep(0.5)  # the forged ack would have been applied by now
            assert api.status(foreign["message_id"]) == "sent"
        finally:
            await nc.close()

    asyncio.run(scenario())
    log = hub.server.log()
    assert f"Publish Violation - Subject \"{ack_subject(other_id)}\"" in log
    assert "device admitted to NATS" in hub.relay.output()


def test_a_wrong_secret_an_unknown_device_and_a_deleted_device_are_refused(hub):
    api = hub.api
    device, deleted = api.register(), api.register()
    status, _, _ = api.call("DELETE", f"/devices/{deleted['device_id']}")
    assert status == 204

    async def scenario():
        for user, password in ((device["device_id"], "not-its-secret"), (device["device_id"], ""),
                               ("no-such-device", device["device_secret"]),
                               (deleted["device_id"], deleted["device_secret"]),
                               ("uaip.devices.*", "x"), (device["device_secret"], device["device_id"])):
            assert "Authorization Violation" in await refused(hub, user, password), user
        # The same server admits the device with its own secret (the refusals above are not a broken callout).
        nc = await connect(hub, device["device_id"], device["device_secret"])
        await nc.close()

    asyncio.run(scenario())
    output = hub.relay.output()
    assert output.count("NATS connection refused: invalid device credentials") >= 6
    # Passwords never reach the log (the swapped pair above shows up as a user name, as any user name would).
    assert "not-its-secret" not in output and deleted["device_secret"] not in output


def test_the_callout_works_with_an_encrypted_exchange(relay_env, hub_env, api_client_factory):
    """With `xkey` in the server's auth_callout block, requests and answers travel sealed."""
    hub = CalloutHub(relay_env, hub_env, api_client_factory, xkey=True)
    try:
        device = hub.api.register()

        async def scenario():
            nc = await connect(hub, device["device_id"], device["device_secret"])
            await nc.publish(heartbeat_subject(device["device_id"]), b"")
            await nc.flush()
            await nc.close()
            assert "Authorization Violation" in await refused(hub, device["device_id"], "wrong")

        asyncio.run(scenario())
        wait_for(lambda: hub.api.device_status(device["device_id"]) == "online", timeout=20, message="online")
    finally:
        hub.close()
