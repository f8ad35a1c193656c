"""Built-in alerts (DESIGN §10): which conditions fire, what a notification says, and how
a target URL is shown without its secrets. No I/O and no clock: time is passed in.

A *condition* (a channel's opportunity at or above ``min_urgency``, the HTLC stream down
longer than ``stream_down_s``, the analysis failing, the store near its size budget)
fires one ``start`` alert when it begins and one ``clear`` alert when it ends; while it
holds nothing more is sent. :class:`AlertRules` keeps the set of conditions that hold
(restored from the store at start-up, so a restart does not repeat them) and turns
observations into :class:`Alert` records. A policy change is a single ``event`` alert.

The webhook bodies follow each service's documented incoming-webhook format
(:func:`webhook_request`); ``json`` is lnflow's own body, :func:`alert_document`
(docs/alerts.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from lnflow.analysis.model import AnalysisReport
from lnflow.domain import format_scid

__all__ = [
    "FORMATS",
    "Alert",
    "AlertKind",
    "AlertRules",
    "Phase",
    "alert_document",
    "alert_text",
    "redact_url",
    "scrub",
    "url_secrets",
    "webhook_request",
]

_NS = 1_000_000_000
_MIB = 1024 * 1024

FORMATS = ("json", "ntfy", "slack", "discord", "mattermost", "telegram")
WebhookFormat = Literal["json", "ntfy", "slack", "discord", "mattermost", "telegram"]

Detail = Mapping[str, str | int | float | bool | None]


class AlertKind(StrEnum):
    OPPORTUNITY = "opportunity"
    STREAM_DOWN = "stream_down"
    ANALYSIS_FAILING = "analysis_failing"
    STORE_BUDGET = "store_budget"
    POLICY_CHANGE = "policy_change"


class Phase(StrEnum):
    START = "start"  # the condition began
    CLEAR = "clear"  # the condition ended
    EVENT = "event"  # a single happening (a policy change)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    phase: Phase
    key: str  # what the condition is about ("" for the node): a channel's decimal SCID
    fired_ns: int
    title: str
    message: str
    detail: Detail = field(default_factory=dict)


def _iso(ts_ns: int) -> str:
    return (
        datetime.fromtimestamp(ts_ns / _NS, UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def _minutes(span_ns: int) -> str:
    minutes = span_ns / (60 * _NS)
    return f"{minutes:.0f} min" if minutes >= 1 else f"{span_ns / _NS:.0f} s"


class AlertRules:
    """Observations in, alerts out. ``active`` holds the (kind, key) conditions that hold."""

    def __init__(
        self,
        *,
        min_urgency: int,
        stream_down_s: float,
        store_budget_pct: int,
        active: Iterable[tuple[AlertKind, str]] = (),
    ) -> None:
        self.min_urgency = min_urgency
        self.stream_down_ns = int(stream_down_s * _NS)
        self.store_budget_pct = store_budget_pct
        self.active: set[tuple[AlertKind, str]] = set(active)
        self._down_since_ns: int | None = None

    def _change(
        self,
        kind: AlertKind,
        key: str,
        holds: bool,
        now_ns: int,
        title: str,
        message: str,
        detail: Detail,
    ) -> Alert | None:
        cond = (kind, key)
        if holds == (cond in self.active):
            return None  # no change: nothing is repeated while a condition holds
        if holds:
            self.active.add(cond)
        else:
            self.active.discard(cond)
        phase = Phase.START if holds else Phase.CLEAR
        return Alert(kind, phase, key, now_ns, title, message, detail)

    # -- conditions ------------------------------------------------------------------

    def snapshot(self, report: AnalysisReport, now_ns: int) -> list[Alert]:
        """A new analysis snapshot: each channel at or above ``min_urgency`` is a
        condition; one that fell below or left the ranking clears. The run also clears
        an ``analysis_failing`` condition."""
        out: list[Alert] = []
        ok = self.analysis(None, now_ns)
        if ok is not None:
            out.append(ok)
        above = {
            str(o.channel_id): o
            for o in report.opportunities
            if o.urgency_score >= self.min_urgency
        }
        for key, o in above.items():
            title = f"opportunity on {format_scid(o.channel_id)}: {o.recommended_action.value}"
            message = (
                f"urgency {o.urgency_score}, {o.missed_msat // 1000:,} sat missed in "
                f"{report.hours} h (about {o.potential_monthly_msat // 1000:,} sat a month) "
                f"to {o.peer_alias or o.peer_pubkey[:16]}: {o.reason}"
            )
            detail: Detail = {
                "chan_id": o.channel_id,
                "scid": format_scid(o.channel_id),
                "peer": o.peer_pubkey,
                "peer_alias": o.peer_alias,
                "action": o.recommended_action.value,
                "urgency": o.urgency_score,
                "missed_msat": o.missed_msat,
                "potential_monthly_msat": o.potential_monthly_msat,
                "window_hours": report.hours,
            }
            alert = self._change(AlertKind.OPPORTUNITY, key, True, now_ns, title, message, detail)
            if alert is not None:
                out.append(alert)
        ended = sorted(
            key for kind, key in self.active if kind is AlertKind.OPPORTUNITY and key not in above
        )
        for key in ended:
            scid = format_scid(int(key))
            alert = self._change(
                AlertKind.OPPORTUNITY,
                key,
                False,
                now_ns,
                f"opportunity on {scid} cleared",
                f"urgency below {self.min_urgency} in the latest snapshot",
                {"chan_id": int(key), "scid": scid},
            )
            assert alert is not None
            out.append(alert)
        return out

    def analysis(self, error: str | None, now_ns: int) -> Alert | None:
        """An analysis run ended: ``error`` None when it succeeded."""
        if error is None:
            return self._change(
                AlertKind.ANALYSIS_FAILING,
                "",
                False,
                now_ns,
                "analysis works again",
                "an analysis run succeeded",
                {},
            )
        return self._change(
            AlertKind.ANALYSIS_FAILING,
            "",
            True,
            now_ns,
            "analysis failing",
            f"an analysis run failed: {error}",
            {"error": error},
        )

    def stream(self, connected: bool, now_ns: int) -> Alert | None:
        """The HTLC stream's state now; down for ``stream_down_s`` starts the condition,
        connected again clears it."""
        if connected:
            since, self._down_since_ns = self._down_since_ns, None
            down = f" after {_minutes(now_ns - since)} down" if since is not None else ""
            return self._change(
                AlertKind.STREAM_DOWN,
                "",
                False,
                now_ns,
                "stream up",
                f"the HTLC event stream is connected again{down}",
                {},
            )
        if self._down_since_ns is None:
            self._down_since_ns = now_ns
        down_ns = now_ns - self._down_since_ns
        if down_ns < self.stream_down_ns:
            return None
        return self._change(
            AlertKind.STREAM_DOWN,
            "",
            True,
            now_ns,
            "stream down",
            f"no HTLC event stream for {_minutes(down_ns)}: failed forwards go unrecorded",
            {"down_since": _iso(self._down_since_ns)},
        )

    def store(self, size_bytes: int, budget_bytes: int, now_ns: int) -> Alert | None:
        """The store's size against ``[retention] max_db_mb`` (0: no budget, never fires).
        Starts at ``store_budget_pct`` % of it, clears 5 points below (no flapping)."""
        if budget_bytes <= 0:
            return None
        pct = 100 * size_bytes / budget_bytes
        cond = (AlertKind.STORE_BUDGET, "")
        holds = pct >= self.store_budget_pct or (
            cond in self.active and pct >= self.store_budget_pct - 5
        )
        detail = {"store_bytes": size_bytes, "budget_bytes": budget_bytes}
        size = f"{size_bytes / _MIB:,.1f} MiB of {budget_bytes / _MIB:,.0f} MiB ({pct:.0f} %)"
        return self._change(
            AlertKind.STORE_BUDGET,
            "",
            holds,
            now_ns,
            "store near its size budget" if holds else "store back under its size budget",
            f"the store holds {size}"
            + ("; retention drops the oldest raw rows at the budget" if holds else ""),
            detail,
        )

    @staticmethod
    def policy_change(
        result: Literal["applied", "failed", "reverted"],
        chan_id: int,
        detail: str,
        now_ns: int,
    ) -> Alert:
        scid = format_scid(chan_id)
        return Alert(
            AlertKind.POLICY_CHANGE,
            Phase.EVENT,
            str(chan_id),
            now_ns,
            f"policy change {result} on {scid}",
            detail,
            {"chan_id": chan_id, "scid": scid, "result": result},
        )


# ------------------------------------------------------------------------- bodies


def alert_document(alert: Alert, *, node_pubkey: str, node_alias: str) -> dict[str, object]:
    """lnflow's own JSON body (webhook ``format = "json"`` and a command's stdin)."""
    return {
        "version": 1,
        "kind": alert.kind.value,
        "state": alert.phase.value,
        "key": alert.key,
        "title": alert.title,
        "message": alert.message,
        "at": _iso(alert.fired_ns),
        "at_ns": alert.fired_ns,
        "node": {"pubkey": node_pubkey, "alias": node_alias},
        "detail": dict(alert.detail),
    }


def alert_text(alert: Alert, node_alias: str) -> str:
    """One message for a chat service: ``[lnflow alias] title: message``."""
    where = f"lnflow {node_alias}" if node_alias else "lnflow"
    return f"[{where}] {alert.title}: {alert.message}"


_ASCII_UNSAFE = re.compile(r"[^\x20-\x7e]")


def webhook_request(
    fmt: WebhookFormat,
    alert: Alert,
    *,
    node_pubkey: str,
    node_alias: str,
    chat_id: str = "",
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the POST for ``fmt``, per each service's documented format:

    - ``json``: :func:`alert_document`;
    - ``ntfy``: the message as the plain-text body, ``Title``/``Priority``/``Tags``
      headers (ntfy's publish API, POST to the topic URL);
    - ``slack`` and ``mattermost``: ``{"text": ...}`` (incoming webhooks);
    - ``discord``: ``{"content": ...}`` (at most 2 000 characters);
    - ``telegram``: ``{"chat_id", "text"}`` for the Bot API's ``sendMessage`` URL.
    """
    if fmt == "json":
        doc = alert_document(alert, node_pubkey=node_pubkey, node_alias=node_alias)
        return json.dumps(doc).encode(), {"Content-Type": "application/json"}
    text = alert_text(alert, node_alias)
    if fmt == "ntfy":
        urgent = alert.phase is Phase.START or alert.kind is AlertKind.POLICY_CHANGE
        headers = {
            # header values are ASCII here: the alias and other node text stay in the body
            "Title": _ASCII_UNSAFE.sub("?", f"lnflow: {alert.title}"),
            "Priority": "high" if urgent else "default",
            "Tags": "warning" if alert.phase is Phase.START else "white_check_mark",
            "Content-Type": "text/plain; charset=utf-8",
        }
        return f"{alert.message}".encode(), headers
    body: dict[str, object]
    if fmt in ("slack", "mattermost"):
        body = {"text": text}
    elif fmt == "discord":
        body = {"content": text[:2000]}
    else:  # telegram
        body = {"chat_id": chat_id, "text": text[:4096], "disable_web_page_preview": True}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


# ------------------------------------------------------------------------- secrets


def redact_url(url: str) -> str:
    """A webhook URL as logs, the store and ``status`` show it: scheme, host and port.

    The rest is left out because it is where the secret lives: a Slack or Discord
    webhook's path is its token, a Telegram URL holds the bot token, an ntfy topic is
    its password, and ``user:pass@`` or a ``?token=`` query are credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def url_secrets(url: str) -> list[str]:
    """The pieces of ``url`` that must never be shown: the URL itself, its user info,
    path, query and each of their parts (longest first, for :func:`scrub`)."""
    found = {url}
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.add(userinfo)
        found.update(userinfo.split(":"))
    for piece in (parts.path, parts.query, parts.fragment):
        if piece and piece != "/":
            found.add(piece)
            found.update(re.split(r"[/&=?;]", piece))
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
