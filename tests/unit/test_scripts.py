"""The developer scripts' own logic: what scripts/test installs for a selection, and scripts/bench's argument check."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "scripts" / "lib.sh"


def lib_says(function: str, *args: str) -> bool:
    """Run a lib.sh function in bash with these arguments; True when it returns 0."""
    result = subprocess.run(["bash", "-c", f'source "{LIB}"; {function} "$@"', "lib.sh", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("args, needs_checkov", [
    ((), True),  # the whole suite
    (("-q", "-m", "not process and not image"), True),  # the quick loop is still the whole tree
    (("tests",), True),
    (("tests/deploy/test_helm.py::test_chart_lints",), True),
    (("tests/unit",), False),
    (("tests/unit", "-x", "-q"), False),
    (("tests/integration/test_cli.py", "tests/unit"), False),
    (("-k", "helm"), True),  # a keyword is no path: every directory is collected
    (("--ignore", "tests/deploy", "tests/unit"), False),
])
def test_checkov_is_installed_only_when_deploy_tests_are_selected(args, needs_checkov):
    assert lib_says("needs_checkov", *args) is needs_checkov


@pytest.mark.parametrize("args, needs_promtool", [
    ((), True),
    (("tests/process",), True),
    (("tests/process/test_pipeline_gunicorn.py::test_metrics",), True),
    (("tests/unit",), False),
    (("tests/integration",), False),
    (("-m", "not process and not image"), True),  # the whole tree, so the alert-rule tests too
    (("tests/process", "-m", "not process"), False),
    (("tests/process/test_metrics_live.py",), True),
    (("tests/deploy",), True),  # the alert rules are checked and unit-tested by promtool
    (("tests/deploy/test_alerts.py", "-m", "not process and not image"), True),
    (("tests/deploy/test_helm.py",), False),
])
def test_promtool_is_installed_only_for_the_tests_that_use_it(args, needs_promtool):
    assert lib_says("needs_promtool", *args) is needs_promtool


@pytest.mark.parametrize("args, needs_clients", [
    ((), True),
    (("-q", "-m", "not process and not image"), True),  # still the integration tests' clients
    (("tests/integration",), True),
    (("tests/integration/test_third_party_clients.py::test_mcp_remote_bridges_stdio_to_the_hub",), True),
    (("tests/process",), True),
    (("tests/process/test_third_party_gunicorn.py", "-m", "not process"), False),
    (("tests/unit",), False),
    (("tests/integration/test_auth.py",), False),
    (("tests/process/test_faults.py",), False),
    (("tests/process/test_mcp_remote_browser.py",), True),
])
def test_third_party_clients_are_installed_only_for_the_tests_that_drive_them(args, needs_clients):
    assert lib_says("needs_third_party_clients", *args) is needs_clients


@pytest.mark.parametrize("args, needs_chromium", [
    ((), True),
    (("tests/process",), True),
    (("tests/process/test_console_browser.py",), True),
    (("tests/process/test_console_browser.py::test_sign_in_and_sign_out",), True),
    (("tests/process/test_mcp_remote_browser.py",), True),
    (("tests/process/test_faults.py",), False),
    (("tests/integration", "tests/unit"), False),
    (("-m", "not process and not image"), False),
])
def test_chromium_is_installed_only_for_the_console_browser_tests(args, needs_chromium):
    assert lib_says("needs_chromium", *args) is needs_chromium


def test_bench_names_the_valid_scenarios_for_a_mistyped_one():
    result = subprocess.run([sys.executable, "-m", "bench.run", "--only", "pipeline", "pipline"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid choice: 'pipline'" in result.stderr
    for name in ("device_list", "pipeline", "commands", "faults", "lifecycle", "state", "events", "revocation"):
        assert f"'{name}'" in result.stderr


def test_bench_help_lists_the_state_events_and_revocation_scenarios():
    result = subprocess.run([sys.executable, "-m", "bench.run", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    listed = " ".join(result.stdout.split()).split("(default: all):")[1]
    assert {"state", "events", "revocation"} <= {name.strip(" ,.") for name in listed.split()}
