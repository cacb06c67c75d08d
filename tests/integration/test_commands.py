"""Commands and messages over HTTP on a real database and NATS (docs/api.md, "Commands and messages"), without a relay
process."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import create_app
from app.infra.subjects import DEVICE_EVENTS_SUBJECT, command_subject
from tests.conftest import basic, unique_id
from tests.support.asserting import nonempty
from tests.support.listen import NatsCollector
from tests.support.services import NATS_URL, free_port

DEVICES = "/api/v1/devices"
MESSAGES = "/api/v1/messages"
MESSAGE_FIELDS = {"message_id", "device_id", "command", "params", "qos", "priority", "status", "result", "error",
                  "created_at", "sent_at", "acknowledged_at", "completed_at", "expires_at", "request_id"}


def command_url(device_id):
    return f"{DEVICES}/{device_id}/command"


def rows_for(db, device_id):
    def query(cur):
        cur.execute("SELECT * FROM commands WHERE device_id = %s ORDER BY created_at", (device_id,))
        return cur.fetchall()

    return db.transaction(query)


def ack(client, device, message_id, status, **extra):
    return client.post(f"{MESSAGES}/{message_id}/ack", json={"status": status, **extra},
                       headers=basic(device["device_id"], device["device_secret"]))


@pytest.fixture()
def device(make_device):
    return make_device()


@pytest.fixture()
def online_device(client, make_device):
    device = make_device()
    r = client.post(f"{DEVICES}/{device['device_id']}/heartbeat",
                    headers=basic(device["device_id"], device["device_secret"]))
    assert r.status_code == 200 and r.json["status"] == "online"
    return device


# --- submit --------------------------------------------------------------------------------------------


def test_submit_stores_publishes_and_marks_sent(client, auth, device, db):
    device_id = device["device_id"]
    with NatsCollector(NATS_URL, [command_subject(device_id)]) as nats:
        r = client.post(command_url(device_id), json={"command": "set_temperature", "params": {"value": 21}},
                        headers={**auth, "X-Request-ID": "req-submit-1"})
        assert r.status_code == 202, r.json
        body = r.json
        assert set(body) == {"message_id", "device_id", "status", "created_at", "expires_at"}
        assert body["device_id"] == device_id and body["status"] == "sent"
        assert r.headers["Location"] == f"{MESSAGES}/{body['message_id']}"
        [envelope] = nats.wait_for(lambda s, b: True)
    assert set(envelope) == {"message_id", "device_id", "command", "params", "qos", "priority", "created_at",
                             "expires_at", "request_id", "device_type", "type_version"}
    assert envelope["type_version"] is None  # the device's type is not declared: a free-form command
    assert envelope["message_id"] == body["message_id"] and envelope["request_id"] == "req-submit-1"
    assert envelope["params"] == {"value": 21} and envelope["qos"] == 1 and envelope["priority"] == 5
    [row] = rows_for(db, device_id)
    assert row["status"] == "sent" and row["request_id"] == "req-submit-1" and row["attempts"] == 1
    assert (row["expires_at"] - row["created_at"]).total_seconds() == pytest.approx(300, abs=1)


def test_get_message_has_exactly_the_documented_fields(client, auth, device):
    r = client.post(command_url(device["device_id"]),
                    json={"action": "reboot", "qos": 2, "priority": 9, "ttl_ms": 60_000}, headers=auth)
    message_id = r.json["message_id"]
    got = client.get(f"{MESSAGES}/{message_id}", headers=auth)
    assert got.status_code == 200
    message = got.json
    assert set(message) == MESSAGE_FIELDS
    assert message["command"] == "reboot" and message["qos"] == 2 and message["priority"] == 9
    assert message["params"] == {} and message["result"] is None and message["sent_at"] is not None
    assert message["request_id"] == r.headers["X-Request-ID"]


def test_get_message_errors(client, auth, token_for):
    assert client.get(f"{MESSAGES}/{uuid.uuid4()}", headers=auth).json["code"] == "MESSAGE_NOT_FOUND"
    assert client.get(f"{MESSAGES}/not-a-uuid", headers=auth).status_code == 404
    no_scope = {"Authorization": f"Bearer {token_for('device:read')}"}
    assert client.get(f"{MESSAGES}/{uuid.uuid4()}", headers=no_scope).status_code == 403


@pytest.mark.parametrize(
    "body, bad_fields",
    [
        ({}, {"body"}),
        ({"params": {}}, {"body"}),
        ({"command": ""}, {"command"}),
        ({"command": 5}, {"command"}),
        ({"command": "x", "action": "y"}, {"body"}),
        ({"command": "x", "qos": 3}, {"qos"}),
        ({"command": "x", "qos": "1"}, {"qos"}),
        ({"command": "x", "priority": 11}, {"priority"}),
        ({"command": "x", "ttl_ms": 5}, {"ttl_ms"}),
        ({"command": "x", "params": [1]}, {"params"}),
        ({"command": "x", "bogus": 1}, {"bogus"}),
        ({"command": "x", "qos": -1, "priority": -1, "ttl_ms": "1"}, {"qos", "priority", "ttl_ms"}),
    ],
)
def test_invalid_command_lists_each_bad_field_and_writes_nothing(client, auth, device, db, body, bad_fields):
    r = client.post(command_url(device["device_id"]), json=body, headers=auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR", r.json
    fields = {key.split(".")[0] for key in r.json["details"]}
    assert fields == bad_fields or (bad_fields == {"body"} and fields <= {"body", "command", "action"}), fields
    assert rows_for(db, device["device_id"]) == []


def test_bad_wait_and_idempotency_key_write_nothing(client, auth, device, db):
    url = command_url(device["device_id"])
    r = client.post(url + "?wait=31", json={"command": "x"}, headers=auth)
    assert r.status_code == 400 and "wait" in r.json["details"]
    r = client.post(url, json={"command": "x"}, headers={**auth, "Idempotency-Key": "k" * 129})
    assert r.status_code == 400 and "Idempotency-Key" in r.json["details"]
    assert rows_for(db, device["device_id"]) == []


def test_unknown_device_is_404(client, auth):
    r = client.post(command_url(unique_id()), json={"command": "x"}, headers=auth)
    assert r.status_code == 404 and r.json["code"] == "DEVICE_NOT_FOUND"
    assert client.post(command_url("bad id!"), json={"command": "x"}, headers=auth).status_code == 404


def test_command_needs_device_command_scope(client, token_for, device):
    headers = {"Authorization": f"Bearer {token_for('device:read device:write')}"}
    assert client.post(command_url(device["device_id"]), json={"command": "x"}, headers=headers).status_code == 403


def test_qos0_to_offline_device_is_503_and_to_online_device_is_accepted(client, auth, device, online_device, db):
    r = client.post(command_url(device["device_id"]), json={"command": "x", "qos": 0}, headers=auth)
    assert r.status_code == 503 and r.json["code"] == "DEVICE_OFFLINE"
    assert rows_for(db, device["device_id"]) == []
    r = client.post(command_url(online_device["device_id"]), json={"command": "x", "qos": 0}, headers=auth)
    assert r.status_code == 202
    # qos 1 to a device that is not online is queued for it, not refused.
    assert client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth).status_code == 202


def test_queue_cap_is_429_and_counts_only_open_commands(hub_env, auth, make_device):
    app = create_app({**hub_env, "MAX_PENDING_COMMANDS_PER_DEVICE": "3"})
    try:
        client = app.test_client()
        device = make_device()
        url = command_url(device["device_id"])
        with ThreadPoolExecutor(6) as pool:
            statuses = sorted(pool.map(lambda _: client.post(url, json={"command": "x"}, headers=auth).status_code,
                                       range(6)))
        assert statuses == [202, 202, 202, 429, 429, 429]
        r = client.post(url, json={"command": "x"}, headers=auth)
        assert r.status_code == 429 and r.json["code"] == "DEVICE_QUEUE_FULL" and "Retry-After" in r.headers
        # An acknowledged command is no longer open: room for one more.
        [first, *_] = client.get(f"{DEVICES}/{device['device_id']}/commands", headers=auth).json["commands"]
        assert ack(client, device, first["message_id"], "acknowledged").status_code == 200
        assert client.post(url, json={"command": "x"}, headers=auth).status_code == 202
    finally:
        app.extensions["uaip.messaging"].close()


def test_post_messages_routes_to_destination(client, auth, device):
    body = {"source": "agent-7", "destination": device["device_id"], "payload": {"action": "open", "params": {"v": 1}},
            "qos": 1, "priority": 3}
    r = client.post(MESSAGES, json=body, headers=auth)
    assert r.status_code == 202 and r.headers["Location"].startswith(MESSAGES)
    message = client.get(r.headers["Location"], headers=auth).json
    assert message["command"] == "open" and message["params"] == {"v": 1} and message["priority"] == 3
    r = client.post(MESSAGES, json={"destination": device["device_id"], "payload": {"text": "hi"}}, headers=auth)
    assert client.get(r.headers["Location"], headers=auth).json["command"] == "message"
    r = client.post(MESSAGES, json={"destination": unique_id(), "payload": {}}, headers=auth)
    assert r.status_code == 404
    r = client.post(MESSAGES, json={"destination": "bad id", "payload": 1, "qos": 7}, headers=auth)
    assert r.status_code == 400 and set(r.json["details"]) == {"destination", "payload", "qos"}


# --- idempotency ---------------------------------------------------------------------------------------


def test_idempotency_same_body_replays_other_body_conflicts(client, auth, device, db, token_for):
    url = command_url(device["device_id"])
    key = {"Idempotency-Key": "order-" + uuid.uuid4().hex}
    first = client.post(url, json={"command": "x", "params": {"a": 1}}, headers={**auth, **key})
    again = client.post(url, json={"params": {"a": 1}, "command": "x"}, headers={**auth, **key})
    assert first.status_code == again.status_code == 202
    assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = client.post(url, json={"command": "y"}, headers={**auth, **key})
    assert other.status_code == 409 and other.json["code"] == "IDEMPOTENCY_KEY_REUSED"
    # Keys are per client: another client's same key is a new command.
    someone_else = {"Authorization": f"Bearer {token_for()}"}
    theirs = client.post(url, json={"command": "x", "params": {"a": 1}}, headers={**someone_else, **key})
    assert theirs.json["message_id"] != first.json["message_id"]
    assert len(rows_for(db, device["device_id"])) == 2


def test_concurrent_requests_with_one_key_make_one_command(client, auth, device, db):
    url = command_url(device["device_id"])
    key = {"Idempotency-Key": uuid.uuid4().hex}
    barrier = threading.Barrier(8)

    def submit(_):
        barrier.wait()
        return client.post(url, json={"command": "x"}, headers={**auth, **key})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(submit, range(8)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json["message_id"] for r in responses}) == 1
    assert len(rows_for(db, device["device_id"])) == 1


# --- listing -------------------------------------------------------------------------------------------


def test_list_device_commands_newest_first_with_filters_and_auth(client, auth, device, make_device, token_for):
    device_id = device["device_id"]
    ids = [client.post(command_url(device_id), json={"command": f"c{i}"}, headers=auth).json["message_id"]
           for i in range(3)]
    own = basic(device_id, device["device_secret"])
    r = client.get(f"{DEVICES}/{device_id}/commands", headers=own)
    assert r.status_code == 200
    assert [c["message_id"] for c in r.json["commands"]] == ids[::-1]
    assert r.json["total"] == 3 and r.json["limit"] == 100 and r.json["offset"] == 0
    assert set(r.json["commands"][0]) == MESSAGE_FIELDS
    page = client.get(f"{DEVICES}/{device_id}/commands?limit=1&offset=1", headers=auth).json
    assert [c["message_id"] for c in page["commands"]] == [ids[1]] and page["total"] == 3
    assert ack(client, device, ids[0], "completed").status_code == 200
    done = client.get(f"{DEVICES}/{device_id}/commands?status=completed", headers=auth).json
    assert [c["message_id"] for c in done["commands"]] == [ids[0]] and done["total"] == 1
    assert client.get(f"{DEVICES}/{device_id}/commands?status=nope", headers=auth).status_code == 400
    other = make_device()
    as_other = basic(other["device_id"], other["device_secret"])
    assert client.get(f"{DEVICES}/{device_id}/commands", headers=as_other).status_code == 403
    assert client.get(f"{DEVICES}/{device_id}/commands", headers=basic(device_id, "wrong")).status_code == 401
    no_scope = {"Authorization": f"Bearer {token_for('device:command')}"}
    assert client.get(f"{DEVICES}/{device_id}/commands", headers=no_scope).status_code == 403
    assert client.get(f"{DEVICES}/{unique_id()}/commands", headers=auth).status_code == 404


# --- acknowledgements ----------------------------------------------------------------------------------


def test_rest_ack_moves_forward_and_is_idempotent(client, auth, device):
    message_id = client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth).json["message_id"]
    r = ack(client, device, message_id, "acknowledged")
    assert r.status_code == 200 and r.json["status"] == "acknowledged" and r.json["acknowledged_at"]
    assert ack(client, device, message_id, "acknowledged").status_code == 200  # duplicate: same answer
    r = ack(client, device, message_id, "completed", result={"temp": 21})
    assert r.status_code == 200 and r.json["status"] == "completed" and r.json["result"] == {"temp": 21}
    assert r.json["completed_at"] is not None
    again = ack(client, device, message_id, "completed", result={"temp": 99})
    assert again.status_code == 200 and again.json["result"] == {"temp": 21}


def test_status_never_goes_backwards(client, auth, device):
    message_id = client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth).json["message_id"]
    assert ack(client, device, message_id, "completed").status_code == 200
    before = client.get(f"{MESSAGES}/{message_id}", headers=auth).json
    for status in ("acknowledged", "failed"):
        r = ack(client, device, message_id, status, error="late")
        assert r.status_code == 409 and r.json["code"] == "INVALID_TRANSITION"
        assert r.json["details"]["current_status"] == "completed"
    assert client.get(f"{MESSAGES}/{message_id}", headers=auth).json == before


def test_failed_ack_records_error(client, auth, device):
    message_id = client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth).json["message_id"]
    r = ack(client, device, message_id, "failed", error="valve stuck")
    assert r.status_code == 200 and r.json["status"] == "failed" and r.json["error"] == "valve stuck"


def test_late_ack_for_expired_command_is_409(client, auth, device, db):
    message_id = client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth).json["message_id"]
    db.transaction(lambda cur: cur.execute(
        "UPDATE commands SET expires_at = now() - interval '1 second' WHERE message_id = %s", (message_id,)))
    r = ack(client, device, message_id, "completed")
    assert r.status_code == 409 and r.json["code"] == "MESSAGE_EXPIRED"
    assert client.get(f"{MESSAGES}/{message_id}", headers=auth).json["status"] == "expired"
    assert ack(client, device, message_id, "acknowledged").json["code"] == "MESSAGE_EXPIRED"


def test_ack_auth_and_validation(client, auth, device, make_device, admin_auth):
    message_id = client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth).json["message_id"]
    other = make_device()
    assert ack(client, other, message_id, "completed").status_code == 403
    assert client.post(f"{MESSAGES}/{message_id}/ack", json={"status": "completed"}, headers=auth).status_code == 403
    r = ack(client, device, message_id, "done", bogus=1)
    assert r.status_code == 400 and set(r.json["details"]) == {"status", "bogus"}
    assert ack(client, device, str(uuid.uuid4()), "completed").status_code == 404
    # An admin may ack on the device's behalf.
    r = client.post(f"{MESSAGES}/{message_id}/ack", json={"status": "completed"}, headers=admin_auth)
    assert r.status_code == 200 and r.json["status"] == "completed"


# --- wait ----------------------------------------------------------------------------------------------


def test_wait_returns_200_with_final_message_when_done_in_time(client, auth, device):
    url = command_url(device["device_id"])

    def ack_when_sent():
        from tests.support.services import wait_for

        listing = wait_for(
            lambda: client.get(f"{DEVICES}/{device['device_id']}/commands", headers=auth).json["commands"],
            message="the command to be stored")
        ack(client, device, listing[0]["message_id"], "completed", result={"ok": True})

    acker = threading.Thread(target=ack_when_sent)
    acker.start()
    r = client.post(url + "?wait=20", json={"command": "x"}, headers=auth)
    acker.join()
    assert r.status_code == 200 and r.json["status"] == "completed" and r.json["result"] == {"ok": True}
    assert set(r.json) == MESSAGE_FIELDS and r.headers["Location"].endswith(r.json["message_id"])


def test_wait_times_out_with_202(client, auth, device):
    r = client.post(command_url(device["device_id"]) + "?wait=1", json={"command": "x"}, headers=auth)
    assert r.status_code == 202 and r.json["status"] == "sent"


# --- devices: deletion and events ----------------------------------------------------------------------


def test_delete_device_cancels_open_commands_and_keeps_history(client, auth, device):
    device_id = device["device_id"]
    url = command_url(device_id)
    done = client.post(url, json={"command": "a"}, headers=auth).json["message_id"]
    ack(client, device, done, "completed")
    acked = client.post(url, json={"command": "b"}, headers=auth).json["message_id"]
    ack(client, device, acked, "acknowledged")
    open_ = client.post(url, json={"command": "c"}, headers=auth).json["message_id"]
    assert client.delete(f"{DEVICES}/{device_id}", headers=auth).status_code == 204
    status = {mid: client.get(f"{MESSAGES}/{mid}", headers=auth).json["status"] for mid in (done, acked, open_)}
    assert status == {done: "completed", acked: "cancelled", open_: "cancelled"}
    history = client.get(f"{DEVICES}/{device_id}/commands", headers=auth).json
    assert history["total"] == 3


def test_lifecycle_events_are_published(client, auth, make_device):
    device_id = unique_id()
    with NatsCollector(NATS_URL, [DEVICE_EVENTS_SUBJECT]) as events:
        device = make_device(device_id=device_id)
        client.patch(f"{DEVICES}/{device_id}", json={"name": "renamed"}, headers=auth)
        client.post(f"{DEVICES}/{device_id}/heartbeat", headers=basic(device_id, device["device_secret"]))
        client.post(f"{DEVICES}/{device_id}/heartbeat", headers=basic(device_id, device["device_secret"]))
        client.delete(f"{DEVICES}/{device_id}", headers=auth)
        mine = lambda s, b: b.get("device_id") == device_id  # noqa: E731
        found = events.wait_for(mine, count=4)
    assert [e["event"] for e in found] == ["registered", "updated", "online", "deleted"]
    assert all(e["at"].endswith("Z") for e in nonempty(found))


def test_nats_down_at_submit_still_accepts_as_queued(hub_env, auth, make_device, db):
    app = create_app({**hub_env, "NATS_URL": f"nats://127.0.0.1:{free_port()}"})
    try:
        client = app.test_client()
        device = make_device()
        r = client.post(command_url(device["device_id"]), json={"command": "x"}, headers=auth)
        assert r.status_code == 202 and r.json["status"] == "queued"
        [row] = rows_for(db, device["device_id"])
        assert row["status"] == "queued" and row["attempts"] == 0
        # Lifecycle events are best effort: the request itself succeeds.
        assert client.patch(f"{DEVICES}/{device['device_id']}", json={"name": "n"}, headers=auth).status_code == 200
    finally:
        app.extensions["uaip.messaging"].close()
