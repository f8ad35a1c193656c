"""row counts kept per node (several nodes in one store: `lnflowctl --node X status`)

``row_counts`` gains ``node_id`` in its key; its rows are counted again per node from the
rows stored (the store-wide counts of 0018 cannot be split), and the triggers of 0018
count each row for its own node. Downgrading sums the nodes' counts back.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lnflow.store.engines import ddl

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _add(table: str, value: str, n: int, node: str | None) -> str:
    if node is None:  # 0018
        return (
            f"INSERT INTO row_counts (table_name, value, n) VALUES ('{table}', {value}, {n})"
            " ON CONFLICT (table_name, value) DO UPDATE SET n = n + excluded.n;"
        )
    return (
        "INSERT INTO row_counts (node_id, table_name, value, n)"
        f" VALUES ({node}.node_id, '{table}', {value}, {n})"
        " ON CONFLICT (node_id, table_name, value) DO UPDATE SET n = n + excluded.n;"
    )


def _triggers(by_node: bool) -> dict[str, str]:
    old, new = ("OLD", "NEW") if by_node else (None, None)
    return {
        "row_counts_event_deleted": (
            f"AFTER DELETE ON htlc_events BEGIN {_add('htlc_events', 'OLD.kind', -1, old)} END"
        ),
        "row_counts_attempt_inserted": (
            "AFTER INSERT ON forward_attempts BEGIN"
            f" {_add('forward_attempts', 'NEW.outcome', 1, new)} END"
        ),
        "row_counts_attempt_changed": (
            "AFTER UPDATE OF outcome ON forward_attempts WHEN OLD.outcome IS NOT NEW.outcome"
            f" BEGIN {_add('forward_attempts', 'OLD.outcome', -1, old)}"
            f" {_add('forward_attempts', 'NEW.outcome', 1, new)} END"
        ),
        "row_counts_attempt_deleted": (
            "AFTER DELETE ON forward_attempts BEGIN"
            f" {_add('forward_attempts', 'OLD.outcome', -1, old)} END"
        ),
        "row_counts_forward_inserted": (
            f"AFTER INSERT ON forwards BEGIN {_add('forwards', '0', 1, new)} END"
        ),
        "row_counts_forward_deleted": (
            f"AFTER DELETE ON forwards BEGIN {_add('forwards', '0', -1, old)} END"
        ),
    }


def _pg_add(table: str, rows: str, by_node: bool) -> str:
    """PL/pgSQL: add ``rows`` (``node_id, value, n``) to ``table``'s counts."""
    if not by_node:  # 0018's
        return (
            f"INSERT INTO row_counts (table_name, value, n) SELECT '{table}', value, sum(n)"
            f" FROM ({rows}) AS d GROUP BY value HAVING sum(n) <> 0"
            " ON CONFLICT (table_name, value) DO UPDATE SET n = row_counts.n + excluded.n;"
        )
    return (
        "INSERT INTO row_counts (node_id, table_name, value, n)"
        f" SELECT node_id, '{table}', value, sum(n) FROM ({rows}) AS d"
        " GROUP BY node_id, value HAVING sum(n) <> 0"
        " ON CONFLICT (node_id, table_name, value) DO UPDATE SET n = row_counts.n + excluded.n;"
    )


def _pg_triggers(by_node: bool) -> dict[str, tuple[str, str, str, str]]:
    """0018's statement triggers on PostgreSQL, counting per node when ``by_node``:
    name -> (event, table, REFERENCING clause, body)."""
    changed = (
        "SELECT o.node_id, o.outcome AS value, -1 AS n FROM old_rows o"
        " JOIN new_rows w ON w.id = o.id WHERE o.outcome IS DISTINCT FROM w.outcome"
        " UNION ALL SELECT w.node_id, w.outcome, 1 FROM old_rows o"
        " JOIN new_rows w ON w.id = o.id WHERE o.outcome IS DISTINCT FROM w.outcome"
    )
    return {
        "row_counts_event_deleted": (
            "DELETE",
            "htlc_events",
            "OLD TABLE AS old_rows",
            _pg_add("htlc_events", "SELECT node_id, kind AS value, -1 AS n FROM old_rows", by_node),
        ),
        "row_counts_attempt_inserted": (
            "INSERT",
            "forward_attempts",
            "NEW TABLE AS new_rows",
            _pg_add(
                "forward_attempts",
                "SELECT node_id, outcome AS value, 1 AS n FROM new_rows",
                by_node,
            ),
        ),
        "row_counts_attempt_changed": (
            "UPDATE",
            "forward_attempts",
            "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            _pg_add("forward_attempts", changed, by_node),
        ),
        "row_counts_attempt_deleted": (
            "DELETE",
            "forward_attempts",
            "OLD TABLE AS old_rows",
            _pg_add(
                "forward_attempts",
                "SELECT node_id, outcome AS value, -1 AS n FROM old_rows",
                by_node,
            ),
        ),
        "row_counts_forward_inserted": (
            "INSERT",
            "forwards",
            "NEW TABLE AS new_rows",
            _pg_add("forwards", "SELECT node_id, 0 AS value, 1 AS n FROM new_rows", by_node),
        ),
        "row_counts_forward_deleted": (
            "DELETE",
            "forwards",
            "OLD TABLE AS old_rows",
            _pg_add("forwards", "SELECT node_id, 0 AS value, -1 AS n FROM old_rows", by_node),
        ),
    }


def _drop_triggers(by_node: bool) -> None:
    if ddl.dialect() != "postgresql":
        for name in _triggers(by_node):
            op.execute(f"DROP TRIGGER {name}")
        return
    for name, (_event, table, _referencing, _body) in _pg_triggers(by_node).items():
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")


def _create_triggers(by_node: bool) -> None:
    if ddl.dialect() != "postgresql":
        for name, body in _triggers(by_node).items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    for name, (event, table, referencing, body) in _pg_triggers(by_node).items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {referencing}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def _swap(by_node: bool, fill: str) -> None:
    """Replace ``row_counts`` (and its triggers) by the layout ``by_node`` or not, filled
    by ``fill`` (a SELECT of its columns)."""
    _drop_triggers(not by_node)
    key = ["node_id", "table_name", "value"] if by_node else ["table_name", "value"]
    op.create_table(
        "row_counts_next",
        *([sa.Column("node_id", sa.SmallInteger(), nullable=False)] if by_node else []),
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        # each layout's own name: PostgreSQL names a key's index in the schema, and the
        # table being replaced still holds the other layout's
        sa.PrimaryKeyConstraint(*key, name="pk_row_counts_by_node" if by_node else "pk_row_counts"),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO row_counts_next ({', '.join([*key, 'n'])}) {fill}")
    op.drop_table("row_counts")
    op.rename_table("row_counts_next", "row_counts")
    _create_triggers(by_node)


def upgrade() -> None:
    _swap(
        True,
        "SELECT node_id, 'htlc_events', kind, count(*) FROM htlc_events GROUP BY node_id, kind"
        " UNION ALL SELECT node_id, 'forward_attempts', outcome, count(*) FROM forward_attempts"
        " GROUP BY node_id, outcome"
        " UNION ALL SELECT node_id, 'forwards', 0, count(*) FROM forwards GROUP BY node_id",
    )


def downgrade() -> None:
    _swap(False, "SELECT table_name, value, sum(n) FROM row_counts GROUP BY table_name, value")
