"""The analysis window and how it splits over the rollups: arithmetic only, no store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from lnflow.store.read.window import EMPTY, Span, span_of, window_for

S = 1_000_000_000
MIN = 60 * S
H = 3600 * S
DAY = 24 * H


@pytest.mark.parametrize(
    ("until_ns", "hours", "since_ns"),
    [
        (10 * H, 1, 9 * H),  # on an hour boundary: the hour that just ended
        (10 * H + 1, 1, 9 * H + 1),  # one ns into hour 10: one hour back, to the ns
        (10 * H + 7 * MIN, 1, 9 * H + 7 * MIN),  # 10:07, one hour: 09:07 onwards
        (10 * H + 20 * MIN, 2, 8 * H + 20 * MIN),
        (10 * H + 20 * MIN, 24, -14 * H + 20 * MIN),
        (10 * H + 20 * MIN, 720, -710 * H + 20 * MIN),
    ],
    ids=["boundary", "just-after", "one-hour", "two-hours", "day", "month"],
)
def test_window_is_exactly_the_hours_before_until(until_ns: int, hours: int, since_ns: int) -> None:
    assert window_for(until_ns, hours) == (since_ns, until_ns)
    assert until_ns - since_ns == hours * H


def test_window_needs_an_hour() -> None:
    with pytest.raises(ValueError, match="hours"):
        window_for(10 * H, 0)


@pytest.mark.parametrize(
    ("lo", "hi", "span"),
    [
        (5 * H, 5 * H, Span(EMPTY, (EMPTY, EMPTY), (EMPTY, EMPTY), ())),
        (
            5 * H + MIN,
            5 * H + 2 * MIN,
            Span(EMPTY, (EMPTY, EMPTY), (EMPTY, EMPTY), ((5 * H + MIN, 5 * H + 2 * MIN),)),
        ),
        # 02:00 to 05:00: whole hours 2..4, no block
        (2 * H, 5 * H, Span(EMPTY, (EMPTY, EMPTY), ((2, 4), EMPTY), ())),
        # 05:30 to 13:15: partial 05:30-06:00, block 1 (06-12), hour 12, partial 13:00-13:15
        (
            5 * H + 30 * MIN,
            13 * H + 15 * MIN,
            Span(
                EMPTY,
                ((1, 1), EMPTY),  # block 1 (06-12), not a whole day's blocks
                ((6, 5), (12, 12)),
                ((5 * H + 30 * MIN, 6 * H), (13 * H, 13 * H + 15 * MIN)),
            ),
        ),
        # day 0 23:00 to day 3 01:00: hour 23, days 1..2, hour 72 (a day's blocks are whole)
        (23 * H, 3 * DAY + H, Span((1, 2), ((4, 3), (12, 11)), ((23, 23), (72, 72)), ())),
        # day 0 10:00 to day 2 08:00: hours 10-11, blocks 2-3, day 1, block 8, hours 54-55
        (10 * H, 2 * DAY + 8 * H, Span((1, 1), ((2, 3), (8, 8)), ((10, 11), (54, 55)), ())),
    ],
    ids=["empty", "inside-one-hour", "hours", "partial-ends", "days", "days-and-blocks"],
)
def test_span_splits_a_range_into_rollup_periods(lo: int, hi: int, span: Span) -> None:
    assert span_of(lo, hi) == span


def test_range_params_name_every_bound() -> None:
    span = span_of(10 * H, 2 * DAY + 8 * H)
    assert span.range_params() == {
        "d0": 1, "d1": 1, "c0": 2, "c1": 3, "e0": 8, "e1": 8,
        "a0": 10, "a1": 11, "b0": 54, "b1": 55,
    }  # fmt: skip
    assert span.has_rollups
    assert not span_of(5 * H + MIN, 5 * H + 2 * MIN).has_rollups


@hyp_settings(max_examples=300, deadline=None)
@given(lo=st.integers(0, 40 * DAY), length=st.integers(0, 40 * DAY))
def test_span_covers_the_window_once_with_few_rows(lo: int, length: int) -> None:
    span = span_of(lo, lo + length)
    pieces = list(span.parts)

    def add(units: tuple[int, int], size: int) -> None:
        first, last = units
        if first <= last:
            pieces.append((first * size, (last + 1) * size))

    add(span.days, DAY)
    for units in span.blocks:
        add(units, 6 * H)
    for units in span.hours:
        add(units, H)
    pieces.sort()
    covered = lo
    for a, b in pieces:  # back to back, no gap, no overlap
        assert a == covered and b > a
        covered = b
    assert covered == lo + length

    # at most 2 partial hours, 2 × 5 hours and 2 × 3 blocks around the days
    def count(ranges: tuple[tuple[int, int], ...]) -> int:
        return sum(max(0, last - first + 1) for first, last in ranges)

    assert len(span.parts) <= 2
    assert count(span.hours) <= 10
    assert count(span.blocks) <= 6
