"""Dependencies killed in turn under load (tests/support/faults.py): what docs/operations.md promises for each
outage holds throughout, and every answer is attributed to the outage during which it was answered."""

import pytest

from tests.support.faults import run_drill

pytestmark = pytest.mark.process


def outcomes(counter: dict) -> set[str]:
    return set(counter)


def test_killing_each_dependency_under_load_loses_nothing(hub_env):
    report = run_drill(hub_env, outage_seconds=3.0)
    print(report)  # the figures, for whoever reads the test log
    redis, nats, postgres = report["phases"]
    # Every phase saw traffic of both kinds: an empty phase would prove nothing.
    for phase in report["phases"]:
        assert sum(phase["submits"].values()) > 0 and sum(phase["reads"].values()) > 0, phase

    # Never a 500, never a dropped connection, whatever is down.
    assert set(report["all_statuses"]) <= {200, 202, 503}, report["all_statuses"]
    # Outside the outages (baseline, gaps between phases) nothing fails.
    assert outcomes(report["quiet"]["submits"]) <= {"202"} and outcomes(report["quiet"]["reads"]) <= {"200"}
    # Redis down: limits fall back to memory; everything keeps working.
    assert outcomes(redis["submits"]) == {"202"} and outcomes(redis["reads"]) == {"200"}
    # NATS down: commands are stored and accepted (queued), reads unaffected.
    assert outcomes(nats["submits"]) == {"202"} and outcomes(nats["reads"]) == {"200"}
    # PostgreSQL down: clear 503s, and it comes back without a restart.
    assert outcomes(postgres["submits"]) <= {"202", "503 SERVICE_UNAVAILABLE"}
    assert "503 SERVICE_UNAVAILABLE" in postgres["reads"] and "200" in postgres["reads"]
    # Nothing the hub accepted is lost: every accepted command reached `completed`, relay never restarted.
    assert report["missing_commands"] == []
    assert report["completed_commands"] == report["accepted_commands"] > 100
    assert report["relay_survived"]
