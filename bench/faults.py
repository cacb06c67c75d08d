"""Fault drill figures (`python -m bench.faults`): answers by status per outage, recovery time, nothing lost.

The drill itself (tests/support/faults.py) is shared with tests/process/test_faults.py, which asserts on it.
"""

from __future__ import annotations

import json
import secrets

from tests.support.faults import run_drill


def run(outage_seconds: float = 5.0) -> dict:
    return run_drill({"JWT_SECRET": "bench-" + secrets.token_hex(24), "RATE_LIMIT_PER_MINUTE": "1000000",
                      "RATE_LIMIT_BURST": "1000000"}, outage_seconds=outage_seconds)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
