#!/usr/bin/env bash
# Install what the image tests need (podman, runc, mmdebstrap) when they are missing.
# Meant for .ci/run before the test suite:  bash scripts/install-image-tools.sh || true
# Without root or apt it only reports; tests/deploy/test_image.py then skips (no podman).
set -euo pipefail
missing=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "[install-image-tools] podman, runc and mmdebstrap are present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "[install-image-tools] missing ${missing[*]}; need root and apt-get to install them" >&2
    exit 1
fi
echo "[install-image-tools] installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap >/dev/null
