#!/usr/bin/env bash
# Build the UAIP Hub image with podman, offline except for the package index.
#
#   scripts/build-image.sh [CONTEXT_DIR] [IMAGE_TAG]
#
# CONTEXT_DIR defaults to the repository root, IMAGE_TAG to localhost/uaip-hub:test.
# BASE_IMAGE (env) names the base; when it is the default local Debian base and
# that image does not exist yet, it is made with mmdebstrap + podman import
# (no container registry is needed, only Debian's package mirror).
# Prints the image id on the last line of stdout.
#
# Why the flags (what podman needed on the machines this was built on):
#   --runtime runc          crun fails on these hosts
#   --ulimit ...            podman's defaults exceed the host's hard limits
#   --format docker         OCI images drop HEALTHCHECK
#   -v <CA bundle>          the host's CA bundle, so pip inside the build reaches the index
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
context="${1:-$(dirname "$here")}"
tag="${2:-localhost/uaip-hub:test}"
base="${BASE_IMAGE:-localhost/uaip-base-debian:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

runtime="${PODMAN_RUNTIME:-runc}"
command -v podman >/dev/null || { echo "[build-image] podman is missing (apt-get install podman runc mmdebstrap)" >&2; exit 2; }
command -v "$runtime" >/dev/null || { echo "[build-image] OCI runtime $runtime is missing (apt-get install $runtime)" >&2; exit 2; }
podman_cmd=(podman --runtime "$runtime")
ulimits=(--ulimit "nofile=1024:20000" --ulimit "nproc=4096:4096")

log() { printf '[build-image] %s\n' "$*" >&2; }

if ! "${podman_cmd[@]}" image exists "$base"; then
    if [[ "$base" != localhost/* ]]; then
        log "base image $base is not present; pulling it"
        "${podman_cmd[@]}" pull "$base" >&2
    else
        command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 2; }
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        log "creating $base with mmdebstrap ($suite)"
        mmdebstrap --quiet --variant=apt \
            --include=python3,python3-venv,ca-certificates \
            "$suite" "$tmp/base.tar" >&2
        "${podman_cmd[@]}" import \
            --change 'CMD ["/bin/bash"]' \
            --change 'ENV LANG=C.UTF-8' \
            "$tmp/base.tar" "$base" >&2
    fi
fi

mounts=()
if [[ -r "$ca_bundle" ]]; then
    mounts=(-v "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro")
fi

log "building $tag from $context on $base"
start=$(date +%s)
"${podman_cmd[@]}" build \
    --format docker \
    "${ulimits[@]}" \
    "${mounts[@]}" \
    --build-arg "BASE_IMAGE=$base" \
    ${BUILD_VERSION:+--build-arg "VERSION=$BUILD_VERSION"} \
    -f "$here/../Dockerfile" \
    -t "$tag" \
    "$context" >&2
log "built in $(( $(date +%s) - start )) s; size $("${podman_cmd[@]}" image inspect --format '{{.Size}}' "$tag") bytes"
"${podman_cmd[@]}" image inspect --format '{{.Id}}' "$tag"
