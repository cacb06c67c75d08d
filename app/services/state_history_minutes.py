"""Per-minute aggregates of the state history (docs/state.md, "History"; migration 013), so that a bucketed read
costs a row per minute instead of a row per point.

`device_state_minutes` holds, per device, property and minute (aligned to the Unix epoch) that has points: how
many points (`points`) and how many of them are numbers (`numbers`), the sum/min/max of the numbers, and the
point that is latest by (at, seq) with its value. Every aggregate merges exactly (counts and sums add, min/max
take the least/greatest, last keeps the later (at, seq)), so a statement-level trigger on the history (migration
013) folds each INSERT's points, grouped by minute, into the rows with one INSERT … ON CONFLICT DO UPDATE in the
same transaction: a point arriving late (older timestamp, higher seq) lands in its own minute and is the minute's
last only if it is latest by (at, seq) there, as in the raw rows. A trigger, not a statement of this service, so
that every writer keeps the minutes exact: the previous release during a rolling upgrade, a bulk load. The table
is partitioned by day like the history, with the same partitions, which the sweep makes, moves and drops together
(state_history.maintain_partitions).

A read with a bucket that is a multiple of 60 s (every minute then lies inside one bucket) takes the window
[from, to) — `from` raised to the retention cut-off — apart into the whole minutes, read from this table, and the
partial minutes at its edges, read from the raw points; each bucket combines both exactly: avg = sum / count of
numbers (not an average of averages), min/max of the minutes' min/max, last = the latest by (at, seq).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

MINUTES = "device_state_minutes"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)

# What each aggregate makes of a bucket's parts (minute rows and edge points alike), and the count of values that
# are not numbers (the numeric aggregates refuse a window that has any).
_COMBINE = {"avg": "sum(num_sum) / nullif(sum(numbers), 0)", "min": "min(num_min)", "max": "max(num_max)",
            "last": "(array_agg(last_value ORDER BY last_at DESC, last_seq DESC))[1]"}
_NOT_NUMBERS = "sum(points - numbers)"


def floor_minute(at: dt.datetime) -> dt.datetime:
    return at - (at - EPOCH) % MINUTE


def grouped_buckets(params: dict[str, Any], agg: str, numeric: bool) -> str:
    """The SELECT of (bin, value, mixed) per bucket, from minutes and edge points, with the raw read's parameters
    (device_id, property, hours, bucket, start and end when given).

    The bounds are expressions in the statement, not values computed beforehand: the retention cut-off then comes
    from the statement's own `now()`, as in the raw read, so both agree to the microsecond; they are stable
    expressions, so PostgreSQL still scans the index by range."""
    low = "greatest(%(start)s::timestamptz, now() - make_interval(hours => %(hours)s))"  # NULL start: the cut-off
    first = f"(date_bin('1 minute', {low} - interval '1 microsecond', 'epoch'::timestamptz) + interval '1 minute')"
    params.setdefault("start", None)
    end = params.get("end")
    last = f"greatest(date_bin('1 minute', %(end)s::timestamptz, 'epoch'::timestamptz), {first})"
    bin_of = "date_bin(make_interval(secs => %(bucket)s), {}, 'epoch'::timestamptz)"
    same = "device_id = %(device_id)s AND property = %(property)s"
    whole = f"minute >= {first}" + (f" AND minute < {last}" if end is not None else "")
    edges = [f"at >= {low} AND at < " + (f"least({first}, %(end)s)" if end is not None else first)]
    if end is not None:
        edges.append(f"at >= {last} AND at < %(end)s")
    # The same bounds again as plain values (implied by the exact ones above): PostgreSQL prunes partitions with
    # these while planning, instead of planning over every partition (which cost more than running the query).
    plain = ((" AND {0} >= %(start)s" if params["start"] is not None else "")
             + (" AND {0} < %(end)s" if end is not None else ""))
    whole += plain.format("minute")
    edges = [edge + plain.format("at") for edge in edges]
    parts = [f"SELECT {bin_of.format('minute')} AS bin, points, numbers, num_sum, num_min, num_max, last_at, "
             f"last_seq, last_value FROM {MINUTES} WHERE {same} AND {whole}"]
    parts += [f"SELECT {bin_of.format('at')}, 1, (num IS NOT NULL)::int, num, num, num, at, seq, value "
              f"FROM device_state_history WHERE {same} AND {edge}" for edge in edges]
    mixed = _NOT_NUMBERS if numeric else "0"
    return (f"SELECT bin, {_COMBINE[agg]} AS value, {mixed} AS mixed FROM ({' UNION ALL '.join(parts)}) parts "
            "GROUP BY 1")
