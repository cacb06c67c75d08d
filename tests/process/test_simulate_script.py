"""scripts/simulate right after scripts/run-hub: the project venv's `uaip-hub simulate`, run-hub's credential."""

import os
import secrets
import signal
import subprocess
import sys

import pytest

from app.services.clients import upsert_client
from tests.support.processes import ROOT, HubServer
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process


def test_scripts_simulate_registers_devices_with_run_hubs_admin_credential(tmp_path, hub_env, db, run_id):
    """run-hub keeps the `local-admin` secret in its state directory; scripts/simulate finds it there."""
    secret = secrets.token_urlsafe(24)
    upsert_client(db, "local-admin", secret, "bootstrap-admin", ["admin"])
    state = tmp_path / "state"
    state.mkdir()
    (state / "dev-admin-secret").write_text(secret + "\n")
    device_id = f"simscript-{run_id}-1"
    output = tmp_path / "simulate.log"
    with HubServer(hub_env, workers=1, threads=4) as hub, open(output, "w") as log:
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "UAIP_LOCAL_STATE": str(state),
               "UAIP_VENV": sys.prefix, "UAIP_HUB_URL": hub.url, "NATS_URL": NATS_URL, "UAIP_ENV_FILE": ""}
        script = subprocess.Popen(["bash", str(ROOT / "scripts" / "simulate"), "--devices", "1",
                                   "--prefix", f"simscript-{run_id}"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "simulating 1 device(s)" in output.read_text() or script.poll() is not None,
                     timeout=30, message="the simulator to start")
            assert script.poll() is None, output.read_text()
            registered = db.transaction(lambda cur: (
                cur.execute("SELECT 1 FROM devices WHERE device_id = %s", (device_id,)), cur.fetchone())[1])
            assert registered is not None
            script.send_signal(signal.SIGTERM)
            assert script.wait(timeout=20) == 0, output.read_text()
        finally:
            if script.poll() is None:
                script.kill()
    text = output.read_text()
    assert "development admin credential (client_id=local-admin)" in text
    assert "stopped;" in text
