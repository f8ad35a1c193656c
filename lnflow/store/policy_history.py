"""The policy engine's history (``policy_changes``, 0017) over a plain DB-API connection.

``lnflowctl policy history`` reads it without SQLAlchemy (through :mod:`sqlite3` or, on
PostgreSQL, psycopg: :class:`lnflow.store.engines.PlainDb`), and ``lnflowd policy`` writes
it through the driver connection of its engine, so there is one code path. A change is
written ``planned`` before lnd is asked, then set to ``applied`` or ``failed``: a store
read at any moment says exactly what lnd was and was not asked to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from lnflow.domain import from_signed64, to_signed64
from lnflow.store.engines import PlainDb, lock_run_numbering

if TYPE_CHECKING:
    from lnflow.policy.effects import Effects

__all__ = [
    "FIELDS",
    "RESULTS",
    "ChangeRow",
    "PolicyValues",
    "changes",
    "evaluated",
    "insert_change",
    "last_changed_ns",
    "next_run_id",
    "set_effects",
    "set_result",
]

FIELDS = (
    "base_fee_msat",
    "fee_ppm",
    "min_htlc_msat",
    "max_htlc_msat",
    "time_lock_delta",
    "inbound_base_fee_msat",
    "inbound_fee_ppm",
    "disabled",
)
RESULTS = ("planned", "applied", "failed", "rolled_back", "reverted")
# results after which lnd held the "after" values: the cooldown counts from them
_CHANGED = ("applied", "rolled_back", "reverted")


@dataclass(frozen=True, slots=True)
class PolicyValues:
    """The policy fields of one side of a change; None: not known / left as it was."""

    base_fee_msat: int | None = None
    fee_ppm: int | None = None
    min_htlc_msat: int | None = None
    max_htlc_msat: int | None = None
    time_lock_delta: int | None = None
    inbound_base_fee_msat: int | None = None
    inbound_fee_ppm: int | None = None
    disabled: bool | None = None


@dataclass(frozen=True, slots=True)
class ChangeRow:
    id: int
    node_id: int
    run_id: int
    created_ns: int
    chan_id: int
    section: str
    strategy: str
    before: PolicyValues
    after: PolicyValues
    snapshot_run_id: int | None
    reason: str
    result: str
    error: str | None
    applied_ns: int | None
    undoes_id: int | None
    whatif_before_msat: int | None
    whatif_after_msat: int | None

    def changed_fields(self) -> list[tuple[str, int | bool | None, int | bool]]:
        """(field, before, after) of every field the change sets."""
        out: list[tuple[str, int | bool | None, int | bool]] = []
        for name in FIELDS:
            new = getattr(self.after, name)
            if new is not None:
                out.append((name, getattr(self.before, name), new))
        return out


def next_run_id(db: PlainDb) -> int:
    """The id of a new run; the run's rows must be inserted in the same transaction
    (until the caller commits, no other writer numbers a run)."""
    lock_run_numbering(db)
    row = db.execute("SELECT coalesce(max(run_id), 0) + 1 FROM policy_changes").fetchone()
    return int(row[0])


def insert_change(
    db: PlainDb,
    *,
    node_id: int,
    run_id: int,
    created_ns: int,
    chan_id: int,
    section: str,
    strategy: str,
    before: PolicyValues,
    after: PolicyValues,
    snapshot_run_id: int | None,
    reason: str,
    result: str = "planned",
    error: str | None = None,
    applied_ns: int | None = None,
    undoes_id: int | None = None,
    whatif: tuple[int, int] | None = None,
) -> int:
    """Insert one change (the caller commits); returns its id."""
    assert result in RESULTS, result
    values: dict[str, Any] = {
        "node_id": node_id,
        "run_id": run_id,
        "created_ns": created_ns,
        "chan_id": to_signed64(chan_id),
        "section": section,
        "strategy": strategy,
        "snapshot_run_id": snapshot_run_id,
        "reason": reason,
        "result": result,
        "error": error,
        "applied_ns": applied_ns,
        "undoes_id": undoes_id,
        "whatif_before_msat": whatif[0] if whatif else None,
        "whatif_after_msat": whatif[1] if whatif else None,
    }
    for f in fields(PolicyValues):
        values[f"before_{f.name}"] = getattr(before, f.name)
        values[f"after_{f.name}"] = getattr(after, f.name)
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    # RETURNING (SQLite 3.35+, PostgreSQL): psycopg's cursor has no lastrowid
    ((change_id,),) = db.execute(
        f"INSERT INTO policy_changes ({names}) VALUES ({marks}) RETURNING id",
        tuple(values.values()),
    ).fetchall()
    return int(change_id)


def set_result(
    db: PlainDb,
    change_id: int,
    result: str,
    *,
    error: str | None = None,
    applied_ns: int | None = None,
) -> None:
    """Record lnd's answer for a planned change (the caller commits)."""
    assert result in RESULTS, result
    db.execute(
        "UPDATE policy_changes SET result = ?, error = ?, applied_ns = ? WHERE id = ?",
        (result, error, applied_ns, change_id),
    )


# the columns a change is read from, in order (a row is unpacked into a dict by them:
# the engines' rows share no access by name)
_READ = (
    "id",
    "node_id",
    "run_id",
    "created_ns",
    "chan_id",
    "section",
    "strategy",
    *(f"{side}_{name}" for side in ("before", "after") for name in FIELDS),
    "snapshot_run_id",
    "reason",
    "result",
    "error",
    "applied_ns",
    "undoes_id",
    "whatif_before_msat",
    "whatif_after_msat",
)


def _values(row: dict[str, Any], side: str) -> PolicyValues:
    got: dict[str, Any] = {}
    for name in FIELDS:
        value = row[f"{side}_{name}"]
        got[name] = bool(value) if name == "disabled" and value is not None else value
    return PolicyValues(**got)


def _row(row: dict[str, Any]) -> ChangeRow:
    return ChangeRow(
        id=row["id"],
        node_id=row["node_id"],
        run_id=row["run_id"],
        created_ns=row["created_ns"],
        chan_id=from_signed64(row["chan_id"]),
        section=row["section"],
        strategy=row["strategy"],
        before=_values(row, "before"),
        after=_values(row, "after"),
        snapshot_run_id=row["snapshot_run_id"],
        reason=row["reason"],
        result=row["result"],
        error=row["error"],
        applied_ns=row["applied_ns"],
        undoes_id=row["undoes_id"],
        whatif_before_msat=row["whatif_before_msat"],
        whatif_after_msat=row["whatif_after_msat"],
    )


def changes(
    db: PlainDb,
    *,
    node_id: int | None = None,
    chan_id: int | None = None,
    run_id: int | None = None,
    ids: Iterable[int] = (),
    results: Sequence[str] = (),
) -> list[ChangeRow]:
    """Changes oldest first, filtered by whatever is given."""
    where: list[str] = []
    params: list[Any] = []
    if node_id is not None:
        where.append("node_id = ?")
        params.append(node_id)
    if chan_id is not None:
        where.append("chan_id = ?")
        params.append(to_signed64(chan_id))
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    wanted = list(ids)
    if wanted:
        where.append(f"id IN ({', '.join('?' for _ in wanted)})")
        params.extend(wanted)
    if results:
        where.append(f"result IN ({', '.join('?' for _ in results)})")
        params.extend(results)
    sql = f"SELECT {', '.join(_READ)} FROM policy_changes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = db.execute(sql + " ORDER BY id", params).fetchall()
    return [_row(dict(zip(_READ, r, strict=True))) for r in rows]


def evaluated(db: PlainDb, change_id: int) -> bool:
    row = db.execute("SELECT evaluated_ns FROM policy_changes WHERE id = ?", (change_id,))
    got = row.fetchone()
    return got is not None and got[0] is not None


def set_effects(
    db: PlainDb, change_id: int, effects: Effects, verdict: str, *, evaluated_ns: int
) -> None:
    """Store a change's measured effects and the verdict on them (the caller commits)."""
    b, a = effects.before, effects.after
    db.execute(
        "UPDATE policy_changes SET evaluated_ns = ?, effect_hours = ?, forwards_before = ?,"
        " forwards_after = ?, fees_out_before_msat = ?, fees_out_after_msat = ?,"
        " fees_in_before_msat = ?, fees_in_after_msat = ?, failures_before = ?,"
        " failures_after = ?, missed_before_msat = ?, missed_after_msat = ?, verdict = ?"
        " WHERE id = ?",
        (
            evaluated_ns,
            effects.hours,
            b.forwards_out,
            a.forwards_out,
            b.fees_out_msat,
            a.fees_out_msat,
            b.fees_in_msat,
            a.fees_in_msat,
            b.failures,
            a.failures,
            b.missed_msat,
            a.missed_msat,
            verdict,
            change_id,
        ),
    )


def last_changed_ns(db: PlainDb, node_id: int) -> dict[int, int]:
    """chan_id → when lnd last took a change of its policy (for the cooldown)."""
    rows = db.execute(
        "SELECT chan_id, max(applied_ns) FROM policy_changes"
        f" WHERE node_id = ? AND applied_ns IS NOT NULL AND result IN {_CHANGED!r}"
        " GROUP BY chan_id",
        (node_id,),
    ).fetchall()
    return {from_signed64(chan): int(ns) for chan, ns in rows}
