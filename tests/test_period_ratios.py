"""Each channel's lowest local ratio per hour and per UTC day (``channel_ratio_hourly``,
``channel_ratio_daily``, migration 0026).

A window holding whole hours reads the lowest ratio of its whole days and hours from
their rows and the samples only in its partial first and last hour. Every window must
still give the lowest ratio of the samples it holds, however they were written (out of
time order, several an hour, some with no balance), deleted (the retention leaves the
rows of the hour and the day it cut into), or migrated.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from conftest import RealStore
from samples import balance_sample
from sqlalchemy import Engine, Table, select

from lnflow.config import RetentionSettings
from lnflow.domain import to_signed64
from lnflow.store import db
from lnflow.store.read.channels import _lowest_ratios, channel_states
from lnflow.store.retention import Pruner
from lnflow.store.schema import channel_ratio_daily, channel_ratio_hourly
from lnflow.store.writer import NS_PER_HOUR

H = NS_PER_HOUR
DAY = 24 * H
A, B, C = ((700_000 + i) << 40 for i in range(1, 4))
START = 2_000 * DAY  # the first day of samples

# (chan, ts_ns, local, remote) of every sample written
Written = list[tuple[int, int, int, int]]


def lowest_of(written: Iterable[tuple[int, int, int, int]], since: int, until: int) -> dict:
    """Each channel's lowest local / (local + remote) of its samples in [since, until]."""
    result: dict[int, float] = {}
    for chan, ts, local, remote in written:
        if since <= ts <= until and local + remote > 0:
            ratio = local / (local + remote)
            result[chan] = min(ratio, result.get(chan, ratio))
    return result


def rows_of(engine: Engine, table: Table) -> dict[tuple[int, int], float]:
    """(chan, period) -> lowest of a ratio table."""
    chan, period, lowest = table.columns["chan_id"], table.columns[2], table.columns["lowest"]
    with engine.connect() as conn:
        return {(c, p): r for c, p, r in conn.execute(select(chan, period, lowest))}


def read(engine: Engine, node_id: int, since: int, until: int) -> dict[int, float | None]:
    """The lowest ratios the analysis reads: every channel asked (inbound_ratio 0), the
    ones with no sample in the window as None."""
    with engine.connect() as conn:
        states = channel_states(conn, node_id, since, until, inbound_ratio=0.0)
    return {chan: s.min_local_ratio for chan, s in states.items()}


def windows(rng: random.Random, first: int, last: int) -> Iterable[tuple[int, int]]:
    """Windows in [first, last]: on day and hour boundaries and a nanosecond off them,
    holding no whole hour, one, no whole day, one, several, and random ones."""
    for days in (1, 2, 3, 7):
        for start in range(first // DAY, last // DAY):
            since = start * DAY
            for a, b in ((0, -1), (0, 0), (1, -1), (-1, 0), (3 * H, 5 * H), (-7 * H, -2)):
                yield since + a, since + days * DAY + b
    for hours in (1, 2, 5, 23, 25):
        for start in range(first // H, last // H, 7):
            since = start * H
            for a, b in ((0, -1), (0, 0), (1, -1), (-1, 0), (H // 3, -H // 3), (1, -2)):
                yield since + a, since + hours * H + b
    for _ in range(60):
        since = rng.randrange(first - DAY, last)
        yield since, since + rng.randrange(1, 8 * DAY)


def write_samples(store: RealStore, rng: random.Random, days: int) -> Written:
    """Samples of A, B and C every ~2 h over ``days`` days, written in shuffled order,
    some with no balance (no ratio), some two at one time."""
    times = sorted({START + rng.randrange(days * DAY) for _ in range(12 * days)})
    times += rng.sample(times, 5)  # a second sample at some times
    rng.shuffle(times)
    written: Written = []
    for ts in times:
        batch = []
        for chan in (A, B, C):
            if rng.random() < 0.1:
                local, remote = 0, 0
            else:
                local = rng.randrange(1_000_000)
                remote = rng.randrange(1, 1_000_000) if rng.random() < 0.9 else 0
            batch.append(balance_sample(chan, local, remote))
            written.append((chan, ts, local, remote))
        store.writer.record_channel_samples(store.node_id, ts, batch)
    return written


def expected_rows(written: Written, ns: int) -> dict[tuple[int, int], float]:
    """(chan, period of ``ns`` nanoseconds) -> the lowest ratio of its samples."""
    result: dict[tuple[int, int], float] = {}
    for chan, ts, local, remote in written:
        if local + remote > 0:
            key = (to_signed64(chan), ts // ns)
            ratio = local / (local + remote)
            result[key] = min(ratio, result.get(key, ratio))
    return result


LEVELS = ((channel_ratio_hourly, H), (channel_ratio_daily, DAY))


@pytest.mark.engines("sqlite", "postgresql")
def test_windows_with_whole_days_read_the_lowest_ratio_of_their_samples(
    real_store: RealStore,
) -> None:
    rng = random.Random(26)
    written = write_samples(real_store, rng, days=6)
    # each period's row holds the lowest ratio of its samples, written in any order
    for table, ns in LEVELS:
        assert rows_of(real_store.engine, table) == expected_rows(written, ns), table.name
    chans = [to_signed64(chan) for chan in (A, B, C)]
    checked = 0
    with real_store.engine.connect() as conn:
        for since, until in windows(rng, START, START + 6 * DAY):
            params = {"node": real_store.node_id, "since": since, "until": until}
            got = _lowest_ratios(conn, params, chans)
            want = lowest_of(written, since, until)
            assert got == {to_signed64(chan): r for chan, r in want.items()}, (since, until)
            checked += 1
    assert checked > 100
    # and as the analysis reads them: the channels whose latest sample is in the window
    for since, until in ((START + DAY, START + 6 * DAY), (START + 5, START + 4 * DAY + 3)):
        for chan, ratio in read(real_store.engine, real_store.node_id, since, until).items():
            assert ratio is None or ratio == lowest_of(written, since, until)[chan]


@pytest.mark.engines("sqlite", "postgresql")
def test_the_day_the_retention_cut_into_is_read_from_its_samples_left(
    open_store: Callable[..., RealStore],
) -> None:
    store = open_store()
    w, node = store.writer, store.node_id
    # day 1 holds A's lowest ratio at 06:00, a higher one at 06:30 and 18:00; then higher
    written: Written = []
    for ts, local in (
        (START + 6 * H, 300_000),
        (START + DAY + 6 * H, 10_000),
        (START + DAY + 6 * H + H // 2, 450_000),
        (START + DAY + 18 * H, 500_000),
        (START + 2 * DAY + 12 * H, 600_000),
        (START + 3 * DAY + 12 * H, 700_000),
    ):
        w.record_channel_samples(node, ts, [balance_sample(A, local, 1_000_000 - local)])
        written.append((A, ts, local, 1_000_000 - local))
    # samples kept 2 days before the prune's now: day 1 from 06:15
    keep_all = {name: 0 for name in RetentionSettings().model_dump() if name.endswith("_days")}
    now = START + 3 * DAY + 6 * H + H // 4
    Pruner(store.engine, {**keep_all, "samples_days": 2}).prune(now, 100, 10)
    left = [row for row in written if row[1] >= now - 2 * DAY]
    assert len(left) == 4
    # the rows of the hour and the day it cut into still hold the deleted sample's ratio;
    # the periods before them expired
    a = to_signed64(A)
    hours, days = (
        rows_of(store.engine, channel_ratio_hourly),
        rows_of(store.engine, channel_ratio_daily),
    )
    assert hours[(a, (START + DAY) // H + 6)] == days[(a, START // DAY + 1)] == 0.01
    assert (a, START // H + 6) not in hours and (a, START // DAY) not in days
    # windows holding that hour or day whole, or from it on, see the samples left
    for since, until in (
        (START, START + 4 * DAY - 1),
        (START + DAY, START + 4 * DAY),
        (START + DAY + 1, START + 4 * DAY),
        (START + DAY - 1, START + 3 * DAY),
        (START + DAY + 6 * H, START + 3 * DAY),
        (START + DAY + 6 * H - 1, START + DAY + 8 * H),
        (START + DAY + 5 * H, START + DAY + 7 * H - 1),
    ):
        got = read(store.engine, node, since, until)
        assert got == lowest_of(left, since, until), (since, until)
        assert got[A] == 0.45


_SAMPLE_SQL = (
    "INSERT INTO channel_samples (node_id, chan_id, ts_ns, capacity_sat,"
    " local_balance_sat, remote_balance_sat, local_reserve_sat, remote_reserve_sat,"
    " active, uptime_s, lifetime_s) VALUES (1, ?, ?, 1000, ?, ?, 0, 0, 1, 0, 0)"
)


def test_0026_fills_the_days_from_the_samples_and_drops_them_again(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0025")
    rng = random.Random(3)
    written: Written = []
    for _ in range(300):
        chan = rng.choice((A, B, C))
        ts = START + rng.randrange(5 * DAY)
        local = rng.randrange(1_000) if rng.random() < 0.95 else 0
        remote = rng.randrange(1_000) if local or rng.random() < 0.5 else 0
        written.append((chan, ts, local, remote))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
        conn.executemany(
            _SAMPLE_SQL,
            [(to_signed64(chan), ts, local, remote) for chan, ts, local, remote in written],
        )
    db.upgrade(engine, path, "0026")
    for table, ns in LEVELS:
        assert rows_of(engine, table) == expected_rows(written, ns), table.name
    db.downgrade(engine, "0025")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert not {"channel_ratio_hourly", "channel_ratio_daily"} & tables
    db.upgrade(engine, path)
    engine.dispose()
