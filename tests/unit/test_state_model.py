"""The state document's pure rules (app/services/state_model.py): RFC 7396 merge patches, the delta, sizes and
nesting, and the per-property timestamp rule — with hypothesis over arbitrary JSON."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.state_model import (
    Side,
    apply_desired,
    apply_report,
    delta,
    effective_time,
    json_depth,
    json_equal,
    merge_patch,
    size_problem,
)

SCALARS = st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from([0.5, 1.0, 2.0]) | st.text(max_size=3)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=3), inner, max_size=3), max_leaves=10)
KEYS = st.sampled_from(["a", "b", "c", "d"])
NON_NULL = JSON.filter(lambda value: value is not None)
DOCUMENT = st.dictionaries(KEYS, NON_NULL, max_size=4)
PATCH = st.dictionaries(KEYS, JSON, max_size=4)


@settings(max_examples=300)
@given(DOCUMENT, DOCUMENT)
def test_delta_is_exactly_the_desired_members_reported_does_not_match(desired, reported):
    found = delta(desired, reported)
    for name, value in desired.items():
        matches = name in reported and json_equal(reported[name], value)
        assert (name in found) is (not matches)
        if name in found:
            assert found[name] is value
    assert set(found) <= set(desired)


@settings(max_examples=300)
@given(DOCUMENT, PATCH)
def test_merge_patch_follows_rfc_7396(target, patch):
    merged = merge_patch(target, patch)
    for name, value in patch.items():
        if value is None:
            assert name not in merged
        elif isinstance(value, dict):
            assert merged[name] == merge_patch(target.get(name), value)
        else:
            assert merged[name] == value
    for name, value in target.items():
        if name not in patch:
            assert merged[name] == value
    assert merge_patch(merged, patch) == merged  # applying a patch twice changes nothing more


@settings(max_examples=200)
@given(DOCUMENT, PATCH)
def test_desired_changes_only_what_the_patch_changes(current, patch):
    outcome = apply_desired(Side(current, {name: {"timestamp": "t0"} for name in current}), patch, "t1", "client")
    assert outcome.side.values == merge_patch(current, patch)
    for name in outcome.changed:
        assert name in patch
        assert outcome.changed[name] == outcome.side.values.get(name)
    for name in patch:
        if name not in outcome.changed and patch[name] is not None:
            assert json_equal(current[name], outcome.side.values[name])


def test_json_equality_is_json_schema_equality():
    assert json_equal(1, 1.0) and not json_equal(True, 1) and not json_equal(0, False)
    assert json_equal({"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2.0}]})
    assert not json_equal([1, 2], [2, 1])


def test_depth_counts_the_side_as_level_one():
    assert json_depth({}) == 1 and json_depth({"a": 1}) == 1 and json_depth({"a": {"b": [1]}}) == 3
    deep: object = 1
    for _ in range(15):
        deep = {"n": deep}
    assert size_problem("desired", {"a": deep}, 10_000) is None
    assert size_problem("desired", {"a": {"n": deep}}, 10_000)["depth"] == 17
    assert size_problem("desired", {"a": "x" * 100}, 50)["bytes"] == len('{"a":""}') + 100


def test_reports_older_than_the_stored_timestamp_are_ignored_per_member():
    stored = Side({"t": 1, "h": 2}, {"t": {"timestamp": "2026-01-01T00:00:10.000Z"},
                                     "h": {"timestamp": "2026-01-01T00:00:00.000Z"}})
    at = dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=dt.UTC)
    outcome = apply_report(stored, {"t": 5, "h": 6}, at, "2026-01-01T00:00:05.000Z")
    assert outcome.ignored == ["t"] and outcome.changed == {"h": 6}
    assert outcome.side.values == {"t": 1, "h": 6}
    equal = apply_report(stored, {"t": 7}, dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC), "x")
    assert equal.changed == {"t": 7}


def test_future_timestamps_count_as_receive_time():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert effective_time(None, now) == now
    assert effective_time(now + dt.timedelta(seconds=5), now) == now + dt.timedelta(seconds=5)
    assert effective_time(now + dt.timedelta(seconds=6), now) == now
    assert effective_time(now - dt.timedelta(days=1), now) == now - dt.timedelta(days=1)
