# UAIP Hub container image.
#
#   podman build --format docker -t uaip-hub .            # on python:3.12-slim
#   podman build --format docker --build-arg BASE_IMAGE=localhost/debian-python:bookworm -t uaip-hub .
#
# Any base with `python3` and the `venv` module works (python:*-slim, or plain
# Debian with python3 + python3-venv): both stages use the same base, so the
# interpreter path baked into the venv exists at run time.
# scripts/build-image.sh does the offline Debian-base recipe.
ARG BASE_IMAGE=python:3.12-slim

########################################################################
# builder: a self-contained virtualenv in /opt/venv
########################################################################
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Fresh pip/setuptools in the venv: Debian's python3-venv ships old ones.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "pip>=24.0" "setuptools>=69" "wheel>=0.42"

ENV PATH=/opt/venv/bin:$PATH

# 1) Dependencies only: exactly the versions and files in requirements.lock
#    (scripts/lock makes it from setup.cfg), every download checked against
#    its hash. This layer is reused as long as the lock file does not change,
#    whatever happens to the application code.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# 2) The application itself, without touching the dependencies again.
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && pip uninstall --yes setuptools wheel \
 && pip check

########################################################################
# runtime: the venv + wsgi.py + gunicorn.conf.py, nothing else
########################################################################
FROM ${BASE_IMAGE} AS runtime

ARG VERSION=dev
LABEL org.opencontainers.image.title="uaip-hub" \
      org.opencontainers.image.description="UAIP Hub: REST hub for IoT devices (Flask + Gunicorn)" \
      org.opencontainers.image.version="${VERSION}"

# Numeric, non-root uid/gid 10001 (the Helm chart's runAsUser). A passwd entry
# keeps tools that look the user up happy; HOME points at /tmp because the root
# filesystem is read-only at run time.
RUN groupadd --system --gid 10001 uaip \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /tmp --shell /usr/sbin/nologin uaip

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SERVER_HOST=0.0.0.0 \
    SERVER_PORT=8443

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --from=builder /src/wsgi.py /src/gunicorn.conf.py ./

USER 10001:10001
EXPOSE 8443
STOPSIGNAL SIGTERM

# No curl in slim images: ask the liveness endpoint with Python itself.
# urlopen raises on a non-2xx answer or no answer, so the exit code is 1 then.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/system/health/liveness' % os.environ.get('SERVER_PORT', '8443'), timeout=4)"]

# Exec form: gunicorn is PID 1 and receives SIGTERM itself.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
