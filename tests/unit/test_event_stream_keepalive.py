"""The stream loop's timing (app/services/event_stream.py) on a simulated clock: a silent stream sends a
`: keep-alive` comment every KEEPALIVE_SECONDS of silence (proxies close idle connections), an event resets that
silence, and the stream ends at its age limit with a `retry:` line. The feed is a stand-in whose ring answers
from a scripted list of events; everything else is the real loop."""

from __future__ import annotations

from app.services import event_stream
from app.services.event_log import Cursor, Filters, Page


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedFeed:
    """The ring holds `events` at the given simulated times; every wait passes its whole timeout (nobody wakes
    the stream), so the loop's own deadlines decide everything."""

    def __init__(self, clock: Clock, events_at: dict[float, dict]) -> None:
        self.clock = clock
        self.events_at = dict(events_at)

    def subscribe(self, filters: Filters | None = None):
        feed = self

        class Subscription:
            live = True

            def wait(self, timeout: float) -> bool:
                feed.clock.now += timeout
                return False

            def close(self) -> None:
                pass

        return Subscription()

    def recent(self, after: Cursor, filters: Filters, limit: int, retention_hours: float) -> Page:
        due = [at for at in self.events_at if at <= self.clock.now]
        events = [self.events_at.pop(at) for at in sorted(due)]
        return Page(events, Cursor(after.pos + len(events), 0))


def frames_with_times(events_at: dict[float, dict], max_seconds: float) -> list[tuple[float, str]]:
    clock = Clock()
    start = clock.now
    feed = ScriptedFeed(clock, {start + at: event for at, event in events_at.items()})
    frames = event_stream.stream(
        db=None, feed=feed, first=Page([], Cursor(0, 0)), filters=Filters(), retention_hours=24,
        max_seconds=max_seconds, stopping=lambda: False, token_valid=lambda: True, clock=clock)
    return [(round(clock.now - start, 1), frame) for frame in frames]


def event(pos: int) -> dict:
    return {"id": f"{pos}-0", "type": "device.updated", "data": {"n": pos}}


def test_a_silent_stream_sends_a_keepalive_every_15_seconds_and_ends_with_retry():
    frames = frames_with_times({}, max_seconds=50)
    keepalives = [at for at, frame in frames if frame == event_stream.KEEPALIVE_FRAME]
    assert keepalives == [15.0, 30.0, 45.0]
    assert frames[0] == (0.0, event_stream.SSE.opening)
    assert frames[-1] == (50.0, f"retry: {event_stream.RETRY_MS}\n\n")


def test_an_event_restarts_the_silence_before_the_next_keepalive():
    frames = frames_with_times({10.0: event(1)}, max_seconds=45)
    assert [at for at, frame in frames if frame.startswith("id: 1-0")] == [10.0]
    # 15 s of silence counted from the event (10 s), not from the stream's start (no keep-alive at 15 s).
    assert [at for at, frame in frames if frame == event_stream.KEEPALIVE_FRAME] == [25.0, 40.0]
