"""The rate-limit rule as pure functions (app/ratelimit/rule.py), on a simulated clock: the guarantees the docs state
hold for any arrival pattern, and the headers say what the rule will do next."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from app.ratelimit.rule import MICROSECONDS, MINUTE_US, Rules, State, decide, drained, expires_after_us, step
from tests.support.arrivals import busiest_minute, per_minute_counts
from tests.support.asserting import nonempty

SECOND = MICROSECONDS


def run(rules: Rules, times: list[int], state: State | None = None):
    """Send one request at each time (µs, non-decreasing); returns the admitted times, every (admitted, state, time)
    and the stored state at the end (only admitted requests are stored, as the stores do)."""
    admitted_times, answers = [], []
    for now in times:
        admitted, after = step(state, now, rules)
        answers.append((admitted, after, now))
        if admitted:
            admitted_times.append(now)
            state = after
    return admitted_times, answers, state


rules_st = st.builds(Rules, per_minute=st.integers(1, 3000), burst=st.integers(1, 300))
# Gaps between arrivals in µs: 0 is "at the same time"; up to 3 s apart.
gaps_st = st.lists(st.one_of(st.just(0), st.integers(0, 3 * SECOND)), min_size=1, max_size=600)


def cumulative(gaps: list[int], start: int = 1_700_000_000 * SECOND) -> list[int]:
    times, now = [], start
    for gap in gaps:
        now += gap
        times.append(now)
    return times


@settings(max_examples=300, deadline=None)
@given(rules_st, gaps_st)
def test_any_interval_holds_at_most_one_bucket_plus_the_rate(rules, gaps):
    """[t_i, t_j] holds at most capacity + (t_j - t_i) x per_minute / 60 s admitted requests; over any minute that
    is per_minute + capacity, i.e. at most one burst above the per-minute figure."""
    admitted, _, _ = run(rules, cumulative(gaps))
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            allowed = rules.capacity + (admitted[j] - start) * rules.per_minute / MINUTE_US
            assert j - i + 1 <= allowed + 1e-9
    assert busiest_minute(admitted) <= rules.per_minute + rules.capacity <= rules.per_minute + rules.burst


@settings(max_examples=300, deadline=None)
@given(rules_st, gaps_st)
def test_a_burst_window_never_admits_more_than_the_burst(rules, gaps):
    """Windows open on an admitted request, last 12 s and do not overlap; none admits more than the burst."""
    _, answers, _ = run(rules, cumulative(gaps))
    windows: dict[int, int] = {}
    for admitted, state, now in answers:
        if admitted:
            assert state.window_start <= now < state.window_start + rules.burst_window_us
            windows[state.window_start] = windows.get(state.window_start, 0) + 1
    assert all(count <= rules.burst for count in nonempty(windows.values()))
    starts = sorted(windows)
    for earlier, later in itertools.pairwise(starts):  # a property: one window (no pair) holds it too
        assert later >= earlier + rules.burst_window_us


@given(st.integers(1, 500), st.integers(1, 500), st.integers(1, 1000))
def test_requests_arriving_together_admit_exactly_one_burst(per_minute, burst, arriving):
    rules = Rules(per_minute=per_minute, burst=burst)
    admitted, _, _ = run(rules, [1_700_000_000 * SECOND] * arriving)
    assert len(admitted) == min(arriving, burst, per_minute)  # the burst, unless the per-minute figure is smaller


def test_a_greedy_client_gets_the_per_minute_rate_in_the_long_run():
    """A request every 10 ms for 10 simulated minutes with the defaults (100/min, burst 20): 20 at once, then one
    window of 20 per 12 s — 100 per minute — and never more than 120 in any 60 s."""
    rules = Rules(per_minute=100, burst=20)
    start = 1_700_000_000 * SECOND
    admitted, _, _ = run(rules, list(range(start, start + 10 * MINUTE_US, 10_000)))
    assert per_minute_counts(admitted, start, 10) == [100] * 10
    assert busiest_minute(admitted) <= 120


def test_a_small_burst_caps_the_rate_at_five_bursts_a_minute():
    rules = Rules(per_minute=1000, burst=20)
    start = 1_700_000_000 * SECOND
    admitted, _, _ = run(rules, list(range(start, start + 3 * MINUTE_US, 10_000)))
    assert per_minute_counts(admitted, start, 3) == [100] * 3


def test_a_refused_request_changes_nothing():
    rules = Rules(per_minute=100, burst=2)
    _, _, state = run(rules, [0, 0])
    for now in (1, SECOND, 11 * SECOND):
        admitted, _ = step(state, now, rules)
        assert not admitted  # and the caller keeps `state`: the window still opened at 0
    assert step(state, 12 * SECOND, rules)[0]


def test_headers_count_down_the_burst_then_refuse_with_its_window():
    rules = Rules(per_minute=10, burst=3)  # capacity 3, the bucket drains one per 6 s
    now = 1_700_000_000 * SECOND
    _, answers, _ = run(rules, [now] * 4)
    decisions = [decide(admitted, state, rules) for admitted, state, _ in answers]
    assert [(d.admitted, d.limit, d.remaining) for d in decisions] == [
        (True, 3, 2), (True, 3, 1), (True, 3, 0), (False, 3, 0)]
    assert {d.reset_at for d in decisions} == {now // SECOND + 12}  # the end of the burst window
    assert decisions[-1].retry_after == 12 and decisions[-1].description == "3 per 12 second"
    assert all(d.retry_after is None for d in nonempty(decisions[:3]))


def test_headers_name_the_per_minute_limit_when_it_binds():
    rules = Rules(per_minute=4, burst=10)  # capacity 4: the bucket drains one request per 15 s
    now = 1_700_000_000 * SECOND
    _, answers, _ = run(rules, [now] * 5)
    decisions = [decide(admitted, state, rules) for admitted, state, _ in answers]
    assert [(d.admitted, d.limit, d.remaining) for d in decisions] == [
        (True, 4, 3), (True, 4, 2), (True, 4, 1), (True, 4, 0), (False, 4, 0)]
    assert decisions[0].reset_at == now // SECOND + 15  # empty again one drain interval after one request
    assert decisions[3].reset_at == now // SECOND + 60
    assert decisions[-1].retry_after == 15 and decisions[-1].description == "4 per 1 minute"


@settings(max_examples=300, deadline=None)
@given(rules_st, gaps_st)
def test_retry_after_is_the_whole_seconds_until_the_next_admission(rules, gaps):
    """After any refusal, a request sent Retry-After seconds later (nothing in between) is admitted, and one sent a
    second earlier would not have been."""
    state = None
    for now in cumulative(gaps) + [cumulative(gaps)[-1]] * (rules.burst + 1):  # ends with a refusal at least
        admitted, seen = step(state, now, rules)
        if admitted:
            state = seen
            continue
        wait = decide(admitted, seen, rules).retry_after
        assert wait >= 1
        assert step(state, now + wait * SECOND, rules)[0]
        assert wait == 1 or not step(state, now + (wait - 1) * SECOND, rules)[0]


@settings(max_examples=200, deadline=None)
@given(rules_st, gaps_st)
def test_remaining_is_how_many_more_would_be_admitted_at_once(rules, gaps):
    times = cumulative(gaps)
    _, answers, state = run(rules, times)
    admitted, seen, now = answers[-1]
    if not admitted:
        return
    remaining = decide(admitted, seen, rules).remaining
    more, _, _ = run(rules, [now] * (remaining + 1), state)
    assert len(more) == remaining


@settings(max_examples=200, deadline=None)
@given(rules_st, gaps_st)
def test_a_stored_state_expires_once_it_equals_no_state(rules, gaps):
    """Stores drop a state after expires_after_us: from then on it must act exactly like a new client's."""
    _, _, state = run(rules, cumulative(gaps))
    if state is None:
        return
    later = state.updated + expires_after_us(state, rules)
    assert later >= state.window_start + rules.burst_window_us
    assert drained(state.level, state.updated, later, rules.per_minute) == 0
    assert step(state, later, rules) == step(None, later, rules)


def test_a_clock_that_steps_back_never_refills_or_drains_the_bucket_backwards():
    rules = Rules(per_minute=60, burst=5)
    _, _, state = run(rules, [100 * SECOND] * 5)
    assert drained(state.level, state.updated, 90 * SECOND, rules.per_minute) == state.level
    assert not step(state, 90 * SECOND, rules)[0]
