"""Assertions that cannot pass vacuously.

`all(check for item in items)` is true for an empty `items`: a test whose query found nothing would pass while the
feature it checks is broken. Every `assert all(...)` in the suite iterates through `nonempty(...)`
(tests/unit/test_suite_setup.py keeps it so).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def nonempty(items: Iterable[T]) -> list[T]:
    """`items` as a list, failing the test when there is nothing in it."""
    found = list(items)
    assert found, "expected at least one item to check, found none"
    return found
