"""Packaging habits: the lock file the image installs from still matches setup.cfg; LICENSE matches its metadata."""

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def install_requires() -> list[Requirement]:
    lines = setup_cfg().get("options", "install_requires").splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def locked() -> dict[str, list[tuple[Version, str, list[str]]]]:
    """name -> [(version, marker text, hashes)]: one entry per marker-split pin (uv's universal lock may pin a
    package twice, for different Pythons)."""
    entries: dict[str, list[tuple[Version, str, list[str]]]] = {}
    # An entry is its first line plus the continuation lines (`\\` at the end), comments dropped.
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hash_options = line.split(" --hash=")
        name_version, _, marker = requirement.partition(";")
        name, _, version = name_version.strip().partition("==")
        assert version, f"not pinned with ==: {line[:80]}"
        entries.setdefault(canonicalize_name(name), []).append(
            (Version(version), marker.strip(), [h.strip() for h in hash_options]))
    return entries


def test_every_locked_package_has_hashes():
    for name, pins in locked().items():
        for version, _, hashes in pins:
            assert hashes and all(h.startswith("sha256:") for h in hashes), f"{name}=={version} has no sha256 hash"


def test_every_runtime_dependency_is_pinned_and_satisfied_by_its_pin():
    """Edit install_requires, then run scripts/lock: this fails until the lock file follows."""
    pins = locked()
    for requirement in install_requires():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is in setup.cfg but not in requirements.lock (run scripts/lock)"
        for version, marker, _ in pins[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}{' ; ' + marker if marker else ''}, "
                f"outside setup.cfg's {requirement} (run scripts/lock)")


def test_lock_file_is_made_by_scripts_lock():
    assert "scripts/lock" in LOCK.read_text().splitlines()[1]


def test_license_file_matches_the_metadata():
    assert setup_cfg().get("metadata", "license") == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
