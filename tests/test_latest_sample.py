"""Each channel's latest sample kept on its ``channels`` row (migration 0024).

The analysis reads a channel's state from the kept sample when the window ends at or
after it, and looks the sample up otherwise: both must give what the samples say,
however they were written (out of time order, two at one time), deleted (the retention,
which lets SQLite hand a deleted id out again), migrated or copied.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import STORE_NODE, RealStore
from daemonproc import run_lnflowd
from pgserver import PgServer
from sqlalchemy import Connection, Engine, create_engine, select, update

from lnflow.analysis.model import ChannelState
from lnflow.config import RetentionSettings
from lnflow.domain import ChannelInfo, ChannelSample, RoutingPolicy, to_signed64
from lnflow.store import db
from lnflow.store.engines import DbUrl
from lnflow.store.read.channels import channel_states
from lnflow.store.retention import Pruner
from lnflow.store.schema import channel_samples, channels
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

H = NS_PER_HOUR
DAY = 24 * H
A, B, C = ((800_000 + i) << 40 for i in range(1, 4))
NOW = 1_000 * DAY


def sample(chan: int, local: int, *, uptime: int = 0, lifetime: int = 0) -> ChannelSample:
    info = ChannelInfo(
        chan_id=chan,
        remote_pubkey="03" + f"{chan % 251:02x}" * 32,
        channel_point=f"{chan:064x}:0",
        capacity_sat=1_000_000,
        local_balance_sat=local,
        remote_balance_sat=1_000_000 - local,
        local_reserve_sat=10_000,
        remote_reserve_sat=10_000,
        active=local % 2 == 0,
        private=False,
        peer_alias="",
        uptime_s=uptime,
        lifetime_s=lifetime,
    )
    ours = RoutingPolicy(local % 7, local % 1_000, 80, 1_000, 990_000_000, False, 0)
    return ChannelSample(info=info, ours=ours, peer=None, peer_alias="peer")


def kept(conn: Connection) -> dict[int, tuple[int | None, int | None]]:
    """Each channel's kept (sample id, time)."""
    c = channels.c
    return {
        chan: (sample_id, ts)
        for chan, sample_id, ts in conn.execute(
            select(c.chan_id, c.latest_sample_id, c.latest_sample_ns)
        )
    }


def newest(conn: Connection) -> dict[int, tuple[int | None, int | None]]:
    """Each channel's sample of the highest time, then id, from the samples themselves."""
    s = channel_samples.c
    result: dict[int, tuple[int | None, int | None]] = {
        chan: (None, None) for chan in conn.scalars(select(channels.c.chan_id))
    }
    for chan, sample_id, ts in conn.execute(
        select(s.chan_id, s.id, s.ts_ns).order_by(s.ts_ns, s.id)
    ):
        result[chan] = (sample_id, ts)
    return result


def states(engine: Engine, node_id: int, since: int, until: int) -> dict[int, ChannelState]:
    with engine.connect() as conn:
        return channel_states(conn, node_id, since, until, inbound_ratio=0.9)


def looked_up(engine: Engine, node_id: int, since: int, until: int) -> dict[int, ChannelState]:
    """The states with no kept sample: each latest sample looked up in the index (the
    statement as it was before 0024)."""
    with engine.begin() as conn:
        saved = kept(conn)
        conn.execute(update(channels).values(latest_sample_id=None, latest_sample_ns=None))
    try:
        return states(engine, node_id, since, until)
    finally:
        with engine.begin() as conn:
            for chan, (sample_id, ts) in saved.items():
                conn.execute(
                    update(channels)
                    .where(channels.c.chan_id == chan)
                    .values(latest_sample_id=sample_id, latest_sample_ns=ts)
                )


@pytest.mark.engines("sqlite", "postgresql")
def test_samples_written_out_of_order_keep_the_latest_and_past_windows_read_their_own(
    real_store: RealStore,
) -> None:
    w, node = real_store.writer, real_store.node_id
    rng = random.Random(7)
    # samples of A, B and C at shuffled times, some twice at one time (the later write
    # is the latest): every write recorded as (time, order written, chan, local)
    times = [NOW - k * H for k in range(12)] * 2
    rng.shuffle(times)
    written: list[tuple[int, int, int, int]] = []
    for order, ts in enumerate(times):
        batch = [
            sample(chan, rng.randrange(1_000_000), uptime=ts // H, lifetime=2 * ts // H)
            for chan in (A, B, C)
        ]
        w.record_channel_samples(node, ts, batch)
        written += [(ts, order, s.info.chan_id, s.info.local_balance_sat) for s in batch]
        with real_store.engine.connect() as conn:
            assert kept(conn) == newest(conn)
    # windows ending after every sample (the kept one is read) and before some of them
    # (the one in force then is looked up), at and between sample times
    for until in (NOW + H, NOW, NOW - H // 2, NOW - 3 * H, NOW - 11 * H, NOW - 12 * H):
        since = until - 5 * H
        got = states(real_store.engine, node, since, until)
        assert got == looked_up(real_store.engine, node, since, until), until
        latest = {}
        for ts, _, chan, local in sorted(written):
            if ts <= until:
                latest[chan] = local
        assert {chan: s.local_balance_sat for chan, s in got.items()} == latest, until


def test_a_deleted_latest_sample_is_forgotten_before_its_id_comes_back(
    open_store: Callable[..., RealStore],
) -> None:
    store = open_store()
    w, node, engine = store.writer, store.node_id, store.engine
    w.record_channel_samples(node, NOW - 2 * H, [sample(A, 100_000)])
    # C's only sample, written last and long ago: the highest id, then deleted
    w.record_channel_samples(node, NOW - 40 * DAY, [sample(A, 200_000), sample(C, 300_000)])
    with engine.connect() as conn:
        c_sample = kept(conn)[to_signed64(C)][0]
    keep_all = {name: 0 for name in RetentionSettings().model_dump() if name.endswith("_days")}
    Pruner(engine, {**keep_all, "samples_days": 30}).prune(NOW, 100, 10)
    with engine.connect() as conn:
        assert kept(conn) == newest(conn)
        assert kept(conn)[to_signed64(C)] == (None, None)
    # the next sample takes C's old id (SQLite: the highest id + 1); C is closed now,
    # inside the window below, and has no sample left: it is no channel of the window
    w.record_channel_samples(node, NOW - 1 * H, [sample(A, 400_000), sample(B, 500_000)])
    with engine.connect() as conn:
        assert kept(conn)[to_signed64(B)][0] == c_sample
        assert kept(conn) == newest(conn)
    got = states(engine, node, NOW - 24 * H, NOW)
    assert got == looked_up(engine, node, NOW - 24 * H, NOW)
    assert {chan: s.local_balance_sat for chan, s in got.items()} == {A: 400_000, B: 500_000}


_SAMPLE_SQL = (
    "INSERT INTO channel_samples (id, node_id, chan_id, ts_ns, capacity_sat,"
    " local_balance_sat, remote_balance_sat, local_reserve_sat, remote_reserve_sat,"
    " active, uptime_s, lifetime_s) VALUES (?, 1, ?, ?, 1000, ?, 0, 0, 0, 1, 0, 0)"
)
_CHANNEL_SQL = "INSERT INTO channels VALUES (1, ?, '03', 'p:0', 1000, '', 0, 0, 0, NULL)"


def test_0024_keeps_the_latest_sample_of_the_rows_there_are_and_drops_it_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0023")
    a, b, c = (to_signed64(chan) for chan in (A, B, C))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
        conn.executemany(_CHANNEL_SQL, [(a,), (b,), (c,)])
        conn.executemany(
            _SAMPLE_SQL,
            [
                (1, a, 5 * H, 1),
                (2, a, 9 * H, 2),  # A's latest
                (3, a, 7 * H, 3),  # written after it, older
                (4, b, 9 * H, 4),
                (5, b, 9 * H, 5),  # B's latest: the same time, the higher id
                (6, b, 8 * H, 6),
            ],
        )
    db.upgrade(engine, path, "0024")
    with engine.connect() as conn:
        assert kept(conn) == {a: (2, 9 * H), b: (5, 9 * H), c: (None, None)}
        assert kept(conn) == newest(conn)
    db.downgrade(engine, "0023")
    with sqlite3.connect(path) as conn:
        names = [r[1] for r in conn.execute("PRAGMA table_info(channels)")]
        assert not {"latest_sample_id", "latest_sample_ns"} & set(names)
        assert conn.execute("SELECT count(*) FROM channel_samples").fetchone() == (6,)
    db.upgrade(engine, path)
    engine.dispose()


@pytest.mark.e2e
@pytest.mark.timeout(360)
def test_a_copied_store_keeps_each_latest_sample_and_reads_the_same(
    tmp_path: Path, pg_server: PgServer
) -> None:
    path = tmp_path / "s.db"
    engine = db.open_engine(path)
    w = StoreWriter(engine)
    node = w.upsert_node(STORE_NODE, 1)
    for ts, local in ((NOW - 3 * H, 3), (NOW - 1 * H, 1), (NOW - 2 * H, 2)):  # out of order
        w.record_channel_samples(node, ts, [sample(A, local), sample(B, 7)])
    engine.dispose()
    url = pg_server.create_db()
    try:
        rc, _, err = run_lnflowd("copy-store", "--from", str(path), "--to", url, timeout=120)
        assert rc == 0 and not err, err
        lite = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        pg = db.open_readonly_engine(DbUrl(url))
        try:
            with lite.connect() as a, pg.connect() as b:
                assert kept(b) == kept(a) == newest(b)
            # the kept sample, then (a window ending earlier) the one in force then
            for until, local in ((NOW, 1), (NOW - 90 * 60 * 10**9, 2)):
                on_pg = states(pg, node, until - 24 * H, until)
                assert on_pg == states(lite, node, until - 24 * H, until)
                assert on_pg[A].local_balance_sat == local
        finally:
            lite.dispose()
            pg.dispose()
    finally:
        pg_server.drop_db(url)
