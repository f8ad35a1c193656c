"""What a committed batch reports to its observer (the metrics hook): new events by type,
the failure rollup rows it added, attempts by the outcome they first resolved with, and
the write time; replays and batching change none of the totals. On both engines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from test_ingest import SEQUENCES, Store, final, forward, link_fail, settle

from lnflow.attempts import Outcome
from lnflow.domain import HtlcEvent
from lnflow.store.engines import StoreLocation
from lnflow.store.ingest import IngestResult

pytestmark = pytest.mark.engines("sqlite", "postgresql")


@pytest.fixture
def new_store(store_at: Callable[[str], StoreLocation]) -> Iterator[Callable[[], Store]]:
    """``new_store()``: the test's store on its engine, its engine disposed after."""
    made: list[Store] = []

    def make() -> Store:
        made.append(Store(store_at("s.db")))
        return made[-1]

    yield make
    for store in made:
        store.engine.dispose()


def observed(store: Store, batches: list[list[HtlcEvent]], now_s: int = 0) -> list[IngestResult]:
    seen: list[tuple[IngestResult, float]] = []
    store.ingestor.observer = lambda result, write_s: seen.append((result, write_s))
    for batch in batches:
        store.feed(batch, now_s)
    assert all(write_s >= 0 for _, write_s in seen)
    return [r for r, _ in seen]


@pytest.mark.parametrize(("events", "outcome"), SEQUENCES.values(), ids=SEQUENCES.keys())
@pytest.mark.parametrize("batching", ["one batch", "one event per batch"])
def test_totals_of_the_batches_equal_the_store(
    new_store: Callable[[], Store], events: list[HtlcEvent], outcome: Outcome, batching: str
) -> None:
    store = new_store()
    batches = [events] if batching == "one batch" else [[e] for e in events]
    results = observed(store, batches + batches)  # the second pass is a replay
    by_type: Counter[tuple[int, int]] = Counter()
    rollup: Counter[tuple[int, ...]] = Counter()
    for r in results:
        by_type.update(r.events_by_type)
        for key, (n, c, raw, dedup) in r.failure_rollup.items():
            for i, v in enumerate((n, c, raw, dedup)):
                rollup[(*key, i)] += v
    assert by_type == Counter(
        {
            (k, t): n
            for k, t, n in store.q(
                "SELECT kind, event_type, count(*) FROM htlc_events GROUP BY 1, 2"
            )
        }
    )
    stored = Counter()
    for hour, out, inc, cls, *values in store.q(
        "SELECT hour, outgoing_channel_id, incoming_channel_id, failure_class, failures,"
        " clusters, missed_raw_msat, missed_dedup_msat FROM failure_rollups_hourly"
    ):
        for i, v in enumerate(values):
            if v:
                stored[(hour, out, inc, cls, i)] = v
    assert +rollup == stored
    resolved = store.ingestor.tracker.resolved
    expected = [0] * len(Outcome)
    if outcome is not Outcome.PENDING:
        expected[outcome] = 1
    assert resolved == expected
    assert results[-1].newest_event_ns == max(e.timestamp_ns for e in batches[-1])


def test_an_expired_attempt_settled_later_counts_once_as_unresolved(
    new_store: Callable[[], Store],
) -> None:
    store = new_store()  # attempt timeout 60 s
    observed(store, [[forward(1, 0)], []], now_s=61)
    assert store.ingestor.tracker.resolved[Outcome.UNRESOLVED] == 1
    observed(store, [[settle(1, 62), final(1, 63, True)]], now_s=63)
    assert store.outcomes() == {1: int(Outcome.SETTLED)}
    assert store.ingestor.tracker.resolved[Outcome.UNRESOLVED] == 1
    assert store.ingestor.tracker.resolved[Outcome.SETTLED] == 0


def test_an_empty_batch_reports_no_events(new_store: Callable[[], Store]) -> None:
    store = new_store()
    (result,) = observed(store, [[]])
    assert result.new_events == 0 and not result.events_by_type and result.newest_event_ns == 0
    (result,) = observed(store, [[link_fail(1, 0)]])
    assert sum(v[0] for v in result.failure_rollup.values()) == 1


def test_a_rolled_back_batch_leaves_no_resolution_counted(new_store: Callable[[], Store]) -> None:
    store = new_store()
    tracker = store.ingestor.tracker
    counts = tracker.resolved  # the list the metrics hold
    tracker.savepoint()
    tracker.feed(forward(1, 0))
    tracker.feed(settle(1, 1))
    assert counts[Outcome.SETTLED] == 1
    tracker.rollback()
    assert counts == [0] * len(Outcome) and tracker.resolved is counts
    observed(store, [[forward(1, 0), settle(1, 1)]])  # the retry counts it once
    assert counts[Outcome.SETTLED] == 1
