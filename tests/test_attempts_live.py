"""AttemptTracker.feed_live (the batch path of the store) against feed, on the traffic
model's events as lnflowd decodes them; and rollback() restoring tracks from savepoint().
"""

from __future__ import annotations

from collections.abc import Iterable

from test_attempts import full_records_only

from lnflow.attempts import Attempt, AttemptTracker, LiveAttempt, Outcome
from lnflow.domain import HtlcEvent
from lnflow.lnd._proto import router_pb2
from lnflow.lnd.convert import htlc_event
from lnflow.sim.hub import Outgoing
from lnflow.sim.main import DEFAULT_VERSION
from lnflow.sim.model import TrafficModel, TrafficParams
from lnflow.sim.state import NodeState, model_channels
from lnflow.store.ingest import _attempt_row, _live_row

S = 1_000_000_000
START = 1_700_000_000 * S
TIMEOUT, LINGER = 2 * S, S // 2  # short: expiries and lingers happen within the run


def model_events(ticks: int) -> list[tuple[int, list[HtlcEvent]]]:
    """(now_ns, decoded events) per 10 ms tick of the model at 5 000 events/s."""
    node = NodeState(1, DEFAULT_VERSION, "sim", "regtest", start_ns=START)
    node.channels = {c.chan_id: c for c in model_channels(8, 1)}
    # most payments resolve or retry within seconds: timeouts and malformed onions too
    model = TrafficModel(node, 1, TrafficParams(onion_fail_share=0.05))
    model.advance(START, 0.0)
    out = []
    for tick in range(1, ticks + 1):
        now = START + tick * S // 100
        decoded = [
            htlc_event(router_pb2.HtlcEvent.FromString(Outgoing(ev).payload))
            for ev in model.advance(now, 5000)
        ]
        out.append((now, [ev for ev in decoded if isinstance(ev, HtlcEvent)]))
    return out


def channels_named(tracks: Iterable[LiveAttempt]) -> set[int]:
    return {c for t in tracks for c in (t.incoming_channel_id, t.outgoing_channel_id)}


def test_feed_live_snapshots_are_feeds_results() -> None:
    by_feed, live = AttemptTracker(TIMEOUT, LINGER), AttemptTracker(TIMEOUT, LINGER)
    fed = changed = 0
    for now, events in model_events(600):
        for ev in events:
            expected = by_feed.feed(ev)
            track = live.feed_live(ev)
            assert (None if track is None else track.snapshot()) == expected
            assert live.decided == by_feed.decided
            fed += 1
            changed += expected is not None
        assert live.expire(now) == by_feed.expire(now)
        assert (live.pending, live.tracked, live.resolved) == (
            by_feed.pending,
            by_feed.tracked,
            by_feed.resolved,
        )
    assert fed > 10_000 and 0 < changed < fed


def test_last_live_state_of_a_batch_is_its_last_snapshot() -> None:
    """What the store writes per batch: each attempt once, as its last change left it."""
    by_feed, live = AttemptTracker(TIMEOUT, LINGER), AttemptTracker(TIMEOUT, LINGER)
    batches = model_events(600)
    for first in range(0, len(batches), 50):  # ~2 500 events per batch
        expected: dict[tuple[int, int], Attempt] = {}
        tracks = {}
        for _, events in batches[first : first + 50]:
            for ev in events:
                att = by_feed.feed(ev)
                if att is not None:
                    expected[att.key] = att
                track = live.feed_live(ev)
                if track is not None:
                    tracks[track.key] = track
        assert {key: t.snapshot() for key, t in tracks.items()} == expected
        assert list(tracks) == list(expected)  # the rows' order, too
        # the store writes a live track's row without building its snapshot
        ref = {c: i for i, c in enumerate(sorted(channels_named(tracks.values())))}
        for key, track in tracks.items():
            assert _live_row(1, track, ref, key[1]) == _attempt_row(1, expected[key], ref, key[1])
        now = batches[min(first + 49, len(batches) - 1)][0]
        assert live.expire(now) == by_feed.expire(now)


def test_rollback_restores_every_track_as_it_was() -> None:
    """A failed batch's retry must find the tracker as before: the same results again."""
    batches = model_events(400)
    tracker, twin = AttemptTracker(TIMEOUT, LINGER), AttemptTracker(TIMEOUT, LINGER)
    for now, events in batches[:200]:  # history: tracks to change, expiries to come
        for ev in events:
            tracker.feed(ev)
            twin.feed(ev)
        tracker.expire(now)
        twin.expire(now)
    batch = [ev for _, events in batches[200:300] for ev in events]
    end = batches[299][0]
    tracker.savepoint()
    first = [tracker.feed(ev) for ev in batch], tracker.expire(end)
    tracker.rollback()
    again = [tracker.feed(ev) for ev in batch], tracker.expire(end)
    untouched = [twin.feed(ev) for ev in batch], twin.expire(end)
    assert first == again == untouched
    assert any(a is not None and a.incoming_amt_msat for a in first[0])
    assert (tracker.pending, tracker.tracked, tracker.resolved) == (
        twin.pending,
        twin.tracked,
        twin.resolved,
    )


def test_lone_finals_held_compactly_give_the_model_traffic_the_same_attempts() -> None:
    """The traffic's malformed onions (lone FINALs) against a tracker that holds each in
    a full record, batch by batch as the store feeds them, expiries included."""
    compact = AttemptTracker(TIMEOUT, LINGER)
    full = full_records_only(AttemptTracker(TIMEOUT, LINGER))
    expired_local = 0
    for now, events in model_events(600):
        for ev in events:
            assert compact.feed(ev) == full.feed(ev)
        expired = compact.expire(now)
        assert expired == full.expire(now)
        expired_local += sum(a.outcome is Outcome.FAILED_LOCAL for a in expired)
        assert (compact.pending + 1, compact.tracked + 1, compact.resolved) == (
            full.pending,
            full.tracked,
            full.resolved,
        )
    assert expired_local > 50


def test_rollback_gives_the_heaps_back_even_across_a_compaction() -> None:
    """savepoint() notes the heaps' pushes and pops instead of copying them: rollback()
    must still give back exactly the entries they held, when a compaction replaced the
    timeouts' heap in between too."""
    tracker = AttemptTracker(10 * TIMEOUT, LINGER // 5)  # hints outlive their tracks
    batches = model_events(400)
    for now, events in batches[:100]:
        for ev in events:
            tracker.feed_live(ev)
        tracker.expire(now)
    compactions = []
    compact = tracker._compact_timeouts
    tracker._compact_timeouts = lambda: (compactions.append(1), compact())[1]  # type: ignore[method-assign]
    for _ in range(2):  # a rollback leaves the savepoint in force: twice the same
        held = sorted(tracker._timeouts), sorted(tracker._lingers)
        tracker.savepoint()
        for now, events in batches[100:400]:
            for ev in events:
                tracker.feed_live(ev)
            tracker.expire(now)
        assert held != (sorted(tracker._timeouts), sorted(tracker._lingers))
        tracker.rollback()
        assert (sorted(tracker._timeouts), sorted(tracker._lingers)) == held
    assert compactions
