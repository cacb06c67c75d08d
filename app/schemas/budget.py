"""The work budget of one params check: steps for what jsonschema does, and a CPU-time backstop.

A command's params are checked on the request thread, so no combination of schema and params may keep a worker
busy for long (docs/device-types.md, "Evaluation is bounded"). Two limits, both per check and per thread:

- steps: entering a subschema costs SUBSCHEMA_STEPS, evaluating a keyword 1 plus the work it does inside (member
  names scanned by a pattern set, characters matched, items compared, annotations collected), an error
  ERROR_STEPS (building errors is the expensive part, also the ones `anyOf`/`oneOf` discard). MAX_STEPS is a few
  hundred milliseconds of CPU at most.
- CPU time: `time.thread_time()` of the checking thread, read every CLOCK_EVERY steps; past MAX_CPU_SECONDS the
  check stops whatever the step count says. It is the backstop for work no step counts: the check stays
  bounded even if a keyword's cost was under-estimated. Thread time is not wall time, so a busy machine (or other
  threads holding the GIL) does not make a check fail.

Either limit raises TooCostly; the caller answers 422 with one error at the params' root (keyword `maxSteps` or
`maxTime`), never 500.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

MAX_STEPS = 200_000
SUBSCHEMA_STEPS = 5
ERROR_STEPS = 25
MAX_CPU_SECONDS = 0.5
CLOCK_EVERY = 512
STEPS_KEYWORD = "maxSteps"
TIME_KEYWORD = "maxTime"


class TooCostly(Exception):
    """A check used up its steps (`keyword` = maxSteps) or its CPU time (`keyword` = maxTime)."""

    def __init__(self, keyword: str) -> None:
        super().__init__(keyword)
        self.keyword = keyword


class _Budget(threading.local):
    remaining: int | None = None
    next_clock: int = 0
    cpu_deadline: float = 0.0


_budget = _Budget()


def spend(steps: int) -> None:
    """Charge `steps` to the running check (nothing outside one); TooCostly when a limit is passed."""
    remaining = _budget.remaining
    if remaining is None:
        return
    remaining -= steps
    _budget.remaining = remaining
    if remaining < 0:
        raise TooCostly(STEPS_KEYWORD)
    if remaining < _budget.next_clock:
        _budget.next_clock = remaining - CLOCK_EVERY
        if time.thread_time() > _budget.cpu_deadline:
            raise TooCostly(TIME_KEYWORD)


@contextlib.contextmanager
def metered() -> Iterator[None]:
    """Run one check under a fresh budget (checks do not nest)."""
    _budget.remaining = MAX_STEPS
    _budget.next_clock = MAX_STEPS - CLOCK_EVERY
    _budget.cpu_deadline = time.thread_time() + MAX_CPU_SECONDS
    try:
        yield
    finally:
        _budget.remaining = None
