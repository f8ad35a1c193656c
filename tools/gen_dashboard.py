"""Write contrib/grafana/lnflow.json, the Grafana dashboard for lnflowd's metrics.

The dashboard is generated so that its panels stay consistent (one data source variable,
one instance filter) and reviewable here; run ``python tools/gen_dashboard.py`` after
editing and commit both files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "lnflow.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'


def target(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


def panel(
    pid: int, title: str, kind: str, grid: tuple[int, int, int, int], targets: list[Any], **kw: Any
) -> dict[str, Any]:
    x, y, w, h = grid
    p: dict[str, Any] = {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
    }
    p.update(kw)
    return p


def unit(u: str, **defaults: Any) -> dict[str, Any]:
    return {"fieldConfig": {"defaults": {"unit": u, **defaults}, "overrides": []}}


def dashboard() -> dict[str, Any]:
    panels = [
        panel(
            1,
            "Missed revenue by outgoing channel (deduplicated, sat/h)",
            "timeseries",
            (0, 0, 12, 8),
            [
                target(
                    f"sum by (chan_out) (rate(lnflow_missed_fees_dedup_msat_total{{{SEL}}}"
                    "[$__rate_interval])) * 3.6",
                    "{{chan_out}}",
                )
            ],
            **unit("short"),
        ),
        panel(
            2,
            "Missed revenue by failure class (deduplicated, sat/h)",
            "timeseries",
            (12, 0, 12, 8),
            [
                target(
                    f"sum by (failure_class) (rate(lnflow_missed_fees_dedup_msat_total{{{SEL}}}"
                    "[$__rate_interval])) * 3.6",
                    "{{failure_class}}",
                )
            ],
            **unit("short"),
        ),
        panel(
            3,
            "Opportunities (latest snapshot)",
            "table",
            (0, 8, 24, 8),
            [
                target(f"lnflow_opportunity_urgency_score{{{SEL}}}", ref="A", instant=True),
                target(f"lnflow_opportunity_missed_msat{{{SEL}}} / 1000", ref="B", instant=True),
                target(
                    f"lnflow_opportunity_potential_monthly_sats{{{SEL}}}", ref="C", instant=True
                ),
            ],
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "__name__": True, "job": True},
                        "renameByName": {
                            "chan_id": "Channel",
                            "peer": "Peer",
                            "action": "Recommendation",
                            "Value #A": "Urgency",
                            "Value #B": "Missed (sat)",
                            "Value #C": "Potential/month (sat)",
                        },
                    },
                },
                {"id": "sortBy", "options": {"sort": [{"field": "Urgency", "desc": True}]}},
            ],
        ),
        panel(
            4,
            "Local failures vs settled forwards (per minute)",
            "timeseries",
            (0, 16, 12, 8),
            [
                target(
                    f"sum(rate(lnflow_local_failures_total{{{SEL}}}[$__rate_interval])) * 60",
                    "local failures",
                    ref="A",
                ),
                target(
                    f"sum(rate(lnflow_forwards_total{{{SEL}}}[$__rate_interval])) * 60",
                    "settled forwards (ledger)",
                    ref="B",
                ),
                target(
                    "sum by (outcome) (rate(lnflow_forward_attempts_total"
                    f"{{{SEL}}}[$__rate_interval])) * 60",
                    "attempts {{outcome}}",
                    ref="C",
                ),
            ],
            **unit("short"),
        ),
        panel(
            5,
            "Fees earned by outgoing channel (sat/h)",
            "timeseries",
            (12, 16, 12, 8),
            [
                target(
                    f"sum by (chan_out) (rate(lnflow_fees_earned_msat_total{{{SEL}}}"
                    "[$__rate_interval])) * 3.6",
                    "{{chan_out}}",
                )
            ],
            **unit("short"),
        ),
        panel(
            6,
            "Stream connected",
            "stat",
            (0, 24, 4, 6),
            [target(f"lnflow_stream_connected{{{SEL}}}", "{{instance}}")],
            **unit("bool_yes_no"),
        ),
        panel(
            7,
            "Stream health",
            "timeseries",
            (4, 24, 10, 6),
            [
                target(f"lnflow_htlc_last_event_age_seconds{{{SEL}}}", "since last event", ref="A"),
                target(f"lnflow_ingest_lag_seconds{{{SEL}}}", "ingest lag", ref="B"),
            ],
            **unit("s"),
        ),
        panel(
            8,
            "Stream sessions opened (reconnects)",
            "timeseries",
            (14, 24, 10, 6),
            [
                target(
                    f"increase(lnflow_stream_sessions_total{{{SEL}}}[$__rate_interval])",
                    "sessions",
                )
            ],
            **unit("short"),
        ),
        panel(
            9,
            "Store size",
            "timeseries",
            (0, 30, 12, 8),
            [
                target(f"lnflow_store_size_bytes{{{SEL}}}", "size", ref="A"),
                target(f"lnflow_store_budget_bytes{{{SEL}}} > 0", "budget", ref="B"),
            ],
            **unit("bytes"),
        ),
        panel(
            10,
            "Rows per table",
            "timeseries",
            (12, 30, 12, 8),
            [target(f"lnflow_store_rows{{{SEL}}}", "{{table}}")],
            **unit("short"),
        ),
        panel(
            11,
            "Batch write and analysis duration (p95)",
            "timeseries",
            (0, 38, 12, 8),
            [
                target(
                    "histogram_quantile(0.95, sum by (le) (rate("
                    f"lnflow_store_batch_write_duration_seconds_bucket{{{SEL}}}"
                    "[$__rate_interval])))",
                    "batch write p95",
                    ref="A",
                ),
                target(
                    "histogram_quantile(0.95, sum by (le) (rate("
                    f"lnflow_analysis_duration_seconds_bucket{{{SEL}}}[1h])))",
                    "analysis p95 (1 h)",
                    ref="B",
                ),
            ],
            **unit("s"),
        ),
        panel(
            12,
            "Local balance ratio",
            "timeseries",
            (12, 38, 12, 8),
            [target(f"lnflow_channel_local_balance_ratio{{{SEL}}}", "{{chan_id}}")],
            **unit("percentunit", min=0, max=1),
        ),
    ]
    return {
        "__inputs": [],
        "title": "lnflow",
        "uid": "lnflow",
        "description": "Missed routing revenue, its causes and lnflowd's health (lnflow)",
        "tags": ["lightning", "lnd", "lnflow"],
        "timezone": "",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "instance",
                    "label": "lnflowd",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(lnflow_build_info, instance)",
                        "refId": "instance",
                    },
                    "definition": "label_values(lnflow_build_info, instance)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")


if __name__ == "__main__":
    main()
