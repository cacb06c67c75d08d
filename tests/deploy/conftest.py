"""Shared bits of the deployment tests (image and Helm chart)."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "uaip-hub"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "image: builds and runs the container image with podman (slow; needs podman, runc, mmdebstrap)",
    )
