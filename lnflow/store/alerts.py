"""The alerts lnflowd fired and their deliveries (tables ``alerts``, ``alert_deliveries``).

:class:`AlertLog` writes them (on the daemon's store thread); :func:`alerts_since`,
:func:`last_deliveries` and :func:`open_conditions` read them back as plain records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select

from lnflow.alerts import Alert, AlertKind, Phase
from lnflow.store import status_read
from lnflow.store.engines import plain_connection
from lnflow.store.schema import alert_deliveries, alerts, nodes
from lnflow.store.status_read import Delivery  # read by lnflowctl status without SQLAlchemy

__all__ = [
    "AlertLog",
    "AlertRecord",
    "Delivery",
    "alerts_since",
    "known_node",
    "last_deliveries",
    "open_conditions",
]

_DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    fired_ns: int
    kind: str
    phase: str
    subject: str
    title: str
    message: str
    detail: dict[str, object]
    deliveries: tuple[Delivery, ...]


class AlertLog:
    """Writes; each method is one short transaction."""

    def __init__(self, engine: Engine, node_id: int, *, keep_days: int) -> None:
        self._engine = engine
        self._node_id = node_id
        self._keep_ns = keep_days * _DAY_NS

    def record_alert(self, alert: Alert) -> int:
        """Store ``alert``; alerts (and their deliveries) older than ``keep_days`` go."""
        with self._engine.begin() as conn:
            cutoff = alert.fired_ns - self._keep_ns
            old = select(alerts.c.id).where(alerts.c.fired_ns < cutoff)
            conn.execute(delete(alert_deliveries).where(alert_deliveries.c.alert_id.in_(old)))
            conn.execute(delete(alerts).where(alerts.c.fired_ns < cutoff))
            result = conn.execute(
                insert(alerts).values(
                    node_id=self._node_id,
                    fired_ns=alert.fired_ns,
                    kind=alert.kind.value,
                    phase=alert.phase.value,
                    subject=alert.key,
                    title=alert.title,
                    message=alert.message,
                    detail=json.dumps(dict(alert.detail)),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def record_delivery(self, alert_id: int, delivery: Delivery) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(alert_deliveries).values(
                    node_id=self._node_id,
                    alert_id=alert_id,
                    target=delivery.target,
                    done_ns=delivery.done_ns,
                    ok=delivery.ok,
                    attempts=delivery.attempts,
                    error=delivery.error,
                )
            )


def _delivery(row: Row[Any]) -> Delivery:
    return Delivery(
        target=row.target,
        done_ns=row.done_ns,
        ok=bool(row.ok),
        attempts=row.attempts,
        error=row.error,
    )


def alerts_since(
    conn: Connection, since_ns: int, limit: int = 10_000, *, node_id: int | None = None
) -> list[AlertRecord]:
    """Alerts fired at or after ``since_ns`` (``node_id``'s if given), oldest first, each
    with its deliveries (the newest ``limit``)."""
    query = select(alerts).where(alerts.c.fired_ns >= since_ns)
    if node_id is not None:
        query = query.where(alerts.c.node_id == node_id)
    rows = conn.execute(query.order_by(alerts.c.id.desc()).limit(limit)).all()[::-1]
    by_alert: dict[int, list[Delivery]] = {}
    if rows:
        for d in conn.execute(
            select(alert_deliveries)
            .where(alert_deliveries.c.alert_id >= rows[0].id)
            .order_by(alert_deliveries.c.id)
        ):
            by_alert.setdefault(d.alert_id, []).append(_delivery(d))
    out = []
    for r in rows:
        try:
            detail = json.loads(r.detail)
        except ValueError:
            detail = {}
        out.append(
            AlertRecord(
                id=r.id,
                fired_ns=r.fired_ns,
                kind=r.kind,
                phase=r.phase,
                subject=r.subject,
                title=r.title,
                message=r.message,
                detail=detail if isinstance(detail, dict) else {},
                deliveries=tuple(by_alert.get(r.id, ())),
            )
        )
    return out


def last_deliveries(conn: Connection) -> dict[str, Delivery]:
    """Each target's latest delivery, by target name (the status reader's query)."""
    return status_read.last_deliveries(plain_connection(conn))


def open_conditions(conn: Connection, node_id: int) -> set[tuple[AlertKind, str]]:
    """The conditions whose latest alert is a start: they still hold as far as the
    store knows (a restart does not announce them again)."""
    latest = (
        select(func.max(alerts.c.id))
        .where(alerts.c.node_id == node_id, alerts.c.phase != Phase.EVENT.value)
        .group_by(alerts.c.kind, alerts.c.subject)
        .scalar_subquery()
    )
    found: set[tuple[AlertKind, str]] = set()
    for kind, subject, phase in conn.execute(
        select(alerts.c.kind, alerts.c.subject, alerts.c.phase).where(alerts.c.id.in_(latest))
    ):
        if phase != Phase.START.value:
            continue
        try:
            found.add((AlertKind(kind), subject))
        except ValueError:
            continue  # a kind this code does not know
    return found


def known_node(conn: Connection) -> tuple[int, str, str] | None:
    """(node_id, pubkey, alias) of the store's only node, or None for a store that has
    never seen lnd, or records several nodes (a daemon knows its own once lnd answers)."""
    rows = conn.execute(select(nodes.c.id, nodes.c.pubkey, nodes.c.alias).limit(2)).all()
    row = rows[0] if len(rows) == 1 else None
    return None if row is None else (int(row.id), str(row.pubkey), str(row.alias))
