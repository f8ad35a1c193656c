"""Bad input: hostile text from the network, numbers out of range, broken files.

Hostile text: a simulated node whose own alias, its peers' aliases and its failure
strings carry terminal control sequences (an OSC window title, a screen clear,
colours, a C1 CSI, a bidi override) and newlines that would forge a table row. Every
human output of the real ``lnflowctl`` and ``lnflowd`` must show them escaped; JSON must
keep them exact; CSV must neither carry them nor start a cell with a formula.

Numbers and files: every numeric flag and setting has a range, and broken files give one
line naming the fix, a non-zero exit and no traceback. docs/reliability.md lists the
promises and the figures these tests measure.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, query, run_lnflowctl, run_lnflowd, sim_flags
from simnode import SimNode

from lnflow.domain import EventKind, format_scid
from lnflow.lnd.credentials import NETWORKS

A = (820_000 << 40) | (1 << 16)
B = (820_001 << 40) | (2 << 16)
C = (820_002 << 40) | (3 << 16)
IN = (820_003 << 40) | (4 << 16)

NODE_ALIAS = "\x1b]0;node-owned\x07\x1b[2Jnode\n1  forged"
ALIASES = {
    # an OSC title, longer than the Peer column: the cut must not leave it open
    A: "\x1b]0;owned\x07evil-title-and-a-long-tail",
    # clear the screen, paint red, then a newline that forges a table row
    B: "\x1b[2J\x1b[31mred\n1  fake row",
    # a C1 CSI (one code point), a bidi override, and a spreadsheet formula
    C: "@SUM(1+1)\x9b31mc1\u202egnp.exe",
}
FAILURE_STRING = '=HYPERLINK("http://x")\x1b[2J\r\nforged'
# what must never reach a terminal: ESC, BEL, CR, C1 CSI, the bidi override
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def _channels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"op": "channel", "chan_id": chan, "peer_alias": alias, "local_balance_sat": 10_000}
        for chan, alias in ALIASES.items()
    ]
    out.append({"op": "channel", "chan_id": IN, "peer_alias": "in", "local_balance_sat": 900_000})
    return out


def _events() -> list[dict[str, Any]]:
    """Three liquidity failures on each hostile channel, 150 sats of fee each, then a final
    event (its ``settled`` / ``offchain`` booleans reach the CSV export)."""
    events: list[dict[str, Any]] = []
    htlc = 0
    for chan in ALIASES:
        for _ in range(3):
            htlc += 1
            events.append(
                {
                    "event": "link_fail",
                    "incoming_channel_id": IN,
                    "incoming_htlc_id": htlc,
                    "outgoing_channel_id": chan,
                    "incoming_amt_msat": 200_150_000,
                    "outgoing_amt_msat": 200_000_000,
                    "incoming_timelock": 900,
                    "outgoing_timelock": 860,
                    "wire_failure": "TEMPORARY_CHANNEL_FAILURE",
                    "failure_detail": "INSUFFICIENT_BALANCE",
                    "failure_string": FAILURE_STRING,
                }
            )
    events.append(
        {"event": "final", "incoming_channel_id": IN, "incoming_htlc_id": 1, "settled": False}
    )
    return events


def _assert_printable(text: str, what: str) -> None:
    for raw in RAW:
        assert raw not in text, (what, raw, text)
    for line in text.splitlines():
        # a forged row would start a line of its own
        assert not line.lstrip().startswith(("1  fake", "1  forged")), (what, line)


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store the real daemon recorded from the hostile node, with one snapshot."""
    tmp = tmp_path_factory.mktemp("hostile")
    script = [*_channels(), {"op": "wait_subscribers", "count": 1}, *_events()]
    db = tmp / "lnflow.db"
    sim = SimNode(tmp / "lnd", script=script, args=("--alias", NODE_ALIAS))
    with sim, Daemon(sim, db, env={"LNFLOW_ANALYSIS__INTERVAL_S": "10"}) as d:
        d.wait_for(
            lambda c: (
                c.execute(
                    "SELECT (SELECT count(*) FROM forward_attempts WHERE outcome = 2),"
                    f" (SELECT count(*) FROM htlc_events WHERE kind = {int(EventKind.FINAL)}),"
                    " (SELECT count(*) FROM channels),"
                    " (SELECT count(*) > 0 FROM analysis_runs WHERE opportunities = 3)"
                ).fetchone()
                == (9, 1, 4, 1)
            ),
            timeout=60,
        )
        assert d.stop() == 0
    return db


# --------------------------------------------------------------------------- item 12


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("opportunities",),
        ("analyze", "--hours", "1"),
        ("monitor", "--duration", "0.0002", "--interval", "0.2", "--min-failures", "1"),
        ("trend", format_scid(A), "--days", "2"),
    ],
    ids=lambda c: c[0],
)
@pytest.mark.e2e
def test_human_output_escapes_hostile_text(hostile_store: Path, command: tuple[str, ...]) -> None:
    code, out, err = run_lnflowctl("--db", str(hostile_store), *command)
    assert code == 0, err
    _assert_printable(out + err, command[0])
    if command[0] == "status":
        # the node alias is shown escaped, visibly
        assert "\\x1b]0;node-owned\\x07\\x1b[2Jnode\\x0a1  forged" in out
    elif command[0] != "trend":
        # every hostile peer is listed, escaped, and the table keeps one line per row
        assert "  \\x1b]0;owned\\x07evi…  " in out  # escaped first, then cut to 20 columns
        assert "  \\x1b[2J\\x1b[31mred\\…  " in out
        assert "  @SUM(1+1)\\x9b31mc1\\…  " in out
        rows = [line for line in out.splitlines() if format_scid(B) in line]
        assert len(rows) == 1


@pytest.mark.e2e
def test_saved_report_renders_escaped(hostile_store: Path, tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    code, out, err = run_lnflowctl(
        "--db", str(hostile_store), "analyze", "--hours", "1", "--output", str(saved)
    )
    assert code == 0, err
    # a report file is input too: a hostile reason must not pass either
    doc = json.loads(saved.read_text())
    doc["opportunities"][0]["reason"] = "fine\x1b[2J\nforged"
    saved.write_text(json.dumps(doc))
    code, out, err = run_lnflowctl("report", str(saved))
    assert code == 0, err
    _assert_printable(out, "report")
    assert "fine\\x1b[2J\\x0aforged" in out


@pytest.mark.e2e
def test_json_keeps_hostile_text_exact(hostile_store: Path) -> None:
    db = ("--db", str(hostile_store))
    code, out, _ = run_lnflowctl(*db, "status", "--json")
    assert code == 0 and json.loads(out)["lnd"]["alias"] == NODE_ALIAS
    for command in (("analyze", "--hours", "1"), ("opportunities",)):
        code, out, err = run_lnflowctl(*db, *command, "--json")
        assert code == 0, err
        got = {o["channel_id"]: o["peer_alias"] for o in json.loads(out)["opportunities"]}
        assert got == ALIASES
    code, out, _ = run_lnflowctl(*db, "export", "--what", "events", "--json")
    fails = [json.loads(line) for line in out.splitlines()]
    assert [r["failure_string"] for r in fails if r["kind"] == "link_fail"] == [FAILURE_STRING] * 9


@pytest.mark.e2e
def test_csv_neutralises_controls_and_formulas(hostile_store: Path) -> None:
    db = ("--db", str(hostile_store))
    code, out, err = run_lnflowctl(*db, "export", "--what", "events")
    assert code == 0, err
    _assert_printable(out, "csv")
    events = list(csv.DictReader(io.StringIO(out)))
    strings = {r["failure_string"] for r in events if r["kind"] == "link_fail"}
    assert strings == {'\'=HYPERLINK("http://x")\\x1b[2J\\x0d\\x0aforged'}
    final = next(r for r in events if r["kind"] == "final")
    assert (final["settled"], final["offchain"]) == ("false", "true")
    code, out, err = run_lnflowctl(*db, "export", "--what", "opportunities")
    assert code == 0, err
    _assert_printable(out, "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    aliases = {int(r["channel_id"]): r["peer_alias"] for r in rows}
    assert aliases[C] == "'@SUM(1+1)\\x9b31mc1\\u202egnp.exe"
    assert aliases[A] == "\\x1b]0;owned\\x07evil-title-and-a-long-tail"
    assert {r["estimated"] for r in rows} == {"false"}


@pytest.mark.e2e
def test_lnflowd_check_escapes_the_node_alias(tmp_path: Path) -> None:
    with SimNode(tmp_path / "lnd", args=("--alias", NODE_ALIAS)) as sim:
        code, out, err = run_lnflowd(*sim_flags(sim), "--check")
    assert code == 0, err
    _assert_printable(out, "lnflowd --check")
    assert "alias:   \\x1b]0;node-owned\\x07\\x1b[2Jnode\\x0a1  forged" in out


# --------------------------------------------------------------------------- item 13


def _one_line_error(code: int, out: str, err: str, want_code: int, *fragments: str) -> str:
    assert code == want_code, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    last = err.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("trend", "1", "--days", "99999999999999999999"), ("--days", "from 1 to 36,500")),
        (("analyze", "--hours", "99999999"), ("--hours", "hours from 1 to 8,784")),
        (("analyze", "--hours", "1.5"), ("--hours", "whole number of hours", "'1.5'")),
        (("analyze", "--hours", "0"), ("--hours", "from 1 to 8,784")),
        (("monitor", "--duration", "inf"), ("--duration", "more than 0 to 8,784")),
        (("monitor", "--duration", "nan"), ("--duration", "'nan'")),
        (("monitor", "--interval", "1e20"), ("--interval", "from 0.01 to 86,400")),
        (("monitor", "--interval", "0"), ("--interval", "from 0.01")),
        (("analyze", "--min-failures", "0"), ("--min-failures", "from 1 to 1,000,000")),
        (("analyze", "--min-missed-sats", "1e30"), ("--min-missed-sats", "from 0 to 2,100,")),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, tuple) and a and a[0][0] != "-" else None,
)
@pytest.mark.e2e
def test_numeric_flags_are_bounded(
    tmp_path: Path, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    code, out, err = run_lnflowctl("--db", str(tmp_path / "none.db"), *args)
    _one_line_error(code, out, err, 2, "error: argument", *fragments)


@pytest.mark.e2e
def test_trend_days_are_cut_to_the_days_the_store_holds(hostile_store: Path) -> None:
    db = ("--db", str(hostile_store))
    code, out, err = run_lnflowctl(*db, "trend", format_scid(A), "--days", "36500", "--json")
    assert code == 0, err
    doc = json.loads(out)
    # the store was written today: one day held (two if the test ran across midnight)
    assert doc["days_requested"] == 36_500 and doc["days"] in (1, 2)
    assert len(doc["series"]) == doc["days"]
    assert sum(d["failures"] for d in doc["series"]) == 3
    code, out, err = run_lnflowctl(*db, "trend", format_scid(A), "--days", "36500")
    assert code == 0, err
    assert "(--days 36500 cut to the days the store holds)" in out.splitlines()[0]
    assert len(out.splitlines()) == 4 + doc["days"]  # title, blank, header, rule, the days


def _run_env(module: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run lnflowd or lnflowctl with LNFLOW_* variables (daemonproc drops the caller's)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LNFLOW_")}
    clean.pop("NOTIFY_SOCKET", None)
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )
    return out.returncode, out.stdout, out.stderr


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[ledger]\nsync_interval_s = 1e18\n", "ledger.sync_interval_s"),
        ("[channels]\nsample_interval_s = 99999999999\n", "channels.sample_interval_s"),
        ("[lnd]\ntimeout_s = inf\n", "lnd.timeout_s"),
        ("[recorder]\nattempt_timeout_s = nan\n", "recorder.attempt_timeout_s"),
        ("[recorder]\ndedup_window_s = 1e300\n", "recorder.dedup_window_s"),
        ("[analysis]\nmax_cost_share = inf\n", "analysis.max_cost_share"),
    ],
    ids=lambda v: v.split("\n")[1] if "\n" in v else None,
)
@pytest.mark.e2e
def test_config_numbers_are_bounded_before_check(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "lnflow.toml"
    config.write_text(toml)
    # --check used to pass with sync_interval_s = 1e20, and the daemon then crashed
    code, out, err = run_lnflowd(
        "--config", str(config), "--check", "--lnddir", str(tmp_path / "nolnd")
    )
    _one_line_error(code, out, err, 2, "lnflowd: error: bad value for", key, str(config))


@pytest.mark.parametrize(
    ("module", "variable", "value", "fragment"),
    [
        ("lnflowd.main", "LNFLOW_LND__TIMEOUT_S", "inf", "lnd.timeout_s"),
        ("lnflowd.main", "LNFLOW_LEDGER__SYNC_INTERVAL_S", "10" * 9, "ledger.sync_interval_s"),
        ("lnflow.cli.ctl", "LNFLOW_ANALYSIS__MAX_COST_SHARE", "inf", "from 0.01 to 1"),
        ("lnflow.cli.ctl", "LNFLOW_ANALYSIS__MIN_MISSED_SATS", "1" + "0" * 30, "from 0 to"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("LNFLOW_") else None,
)
@pytest.mark.e2e
def test_environment_numbers_are_bounded(
    hostile_store: Path, module: str, variable: str, value: str, fragment: str
) -> None:
    args = ("--check",) if module == "lnflowd.main" else ("--db", str(hostile_store), "analyze")
    code, out, err = _run_env(module, *args, env={variable: value})
    _one_line_error(code, out, err, 2, "error:", fragment)


# --------------------------------------------------------------------------- item 15


@pytest.mark.e2e
def test_lnflowd_without_lnd_dir_prints_one_line(tmp_path: Path) -> None:
    """The scheduler's first prune is still running when the credentials turn out missing:
    its cancellation used to print 15 lines of APScheduler traceback first."""
    for run in range(2):
        db = tmp_path / f"{run}.db"
        nolnd = str(tmp_path / "nolnd")
        code, _, err = run_lnflowd("--lnddir", nolnd, "--db", str(db), "--log-format", "json")
        assert code == 4, err
        assert "Traceback" not in err and "CancelledError" not in err, err
        lines = [line for line in err.splitlines() if not line.startswith("{")]
        assert lines == [
            f"lnflowd: error: TLS certificate not found at {tmp_path / 'nolnd' / 'tls.cert'}: "
            "pass --tlscertpath or --lnddir pointing at lnd's directory"
        ]


@pytest.mark.e2e
def test_sigterm_while_connecting_exits_quietly(tmp_path: Path) -> None:
    sim = SimNode(tmp_path / "lnd")
    sim.start()
    sim.stop()  # its credentials stay; nothing listens: lnflowd keeps retrying
    db = tmp_path / "lnflow.db"
    d = Daemon(sim, db)
    d.start()
    try:
        d.wait_for(
            lambda c: (
                c.execute("SELECT lnd_state FROM daemon_state").fetchone() == ("unreachable",)
            ),
            timeout=30,
        )
    finally:
        code = d.stop(signal.SIGTERM)
    assert code == 0
    log = d.log()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert query(db, "SELECT stopped_ns IS NOT NULL FROM daemon_state") == [(1,)]


def _random_bytes(path: Path) -> Path:
    # not UTF-8 from the first byte on (0xff never occurs in UTF-8)
    path.write_bytes(b"\xff\xfe" + bytes(range(256)) * 4)
    return path


@pytest.mark.e2e
def test_random_bytes_for_a_file(tmp_path: Path) -> None:
    junk = _random_bytes(tmp_path / "junk")
    code, out, err = run_lnflowctl("report", str(junk))
    _one_line_error(code, out, err, 2, f"{junk} is not JSON (not UTF-8 text)", "analyze --output")
    code, out, err = run_lnflowd("--config", str(junk), "--check")
    _one_line_error(code, out, err, 2, f"config file {junk} is not valid TOML (not UTF-8")
    for command in (("status",), ("analyze",)):
        code, out, err = run_lnflowctl("--config", str(junk), *command)
        _one_line_error(code, out, err, 2, f"config file {junk} is not valid TOML (not UTF-8")


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("store = 5\n", "[store] must be a table"),
        ("[store]\ndb = 5\n", "bad value for 'store.db'"),
        ("analysis = 5\n", "[analysis] must be a table"),
    ],
)
@pytest.mark.e2e
def test_config_of_the_wrong_shape_for_lnflowctl(tmp_path: Path, toml: str, fragment: str) -> None:
    config = tmp_path / "lnflow.toml"
    config.write_text(toml)
    code, out, err = (
        run_lnflowctl("--config", str(config), "--db", str(tmp_path / "x.db"), "analyze")
        if "store" not in toml
        else run_lnflowctl("--config", str(config), "status")
    )
    _one_line_error(code, out, err, 2, fragment)


@pytest.mark.parametrize(
    ("field", "value"),
    [("missed_msat", 10**400), ("potential_monthly_sats", 1e308), ("failure_rate", "NaN")],
)
@pytest.mark.e2e
def test_report_with_numbers_out_of_range(
    hostile_store: Path, tmp_path: Path, field: str, value: object
) -> None:
    saved = tmp_path / "report.json"
    code, _, err = run_lnflowctl(
        "--db", str(hostile_store), "analyze", "--hours", "1", "--output", str(saved)
    )
    assert code == 0, err
    text = saved.read_text()
    doc = json.loads(text)
    doc["opportunities"][0][field] = 0  # placeholder, replaced as raw JSON below
    raw = json.dumps(doc).replace(f'"{field}": 0', f'"{field}": {value}', 1)
    saved.write_text(raw)
    code, out, err = run_lnflowctl("report", str(saved))
    _one_line_error(code, out, err, 2, f"opportunities[0].{field}", "analyze --output")


# --------------------------------------------------------------------------- item 16


@pytest.mark.e2e
def test_lnflowd_help_lists_every_network() -> None:
    code, out, _ = run_lnflowd("--help")
    assert code == 0
    text = " ".join(out.split())
    for network in NETWORKS:
        assert f"{network}," in text or f"{network} " in text, network


@pytest.mark.parametrize(
    ("rpcserver", "fragment"),
    [
        ("", "the lnd address is empty"),
        ("   ", "the lnd address is empty"),
        ("node.lan:99999", "'node.lan:99999' has no valid port"),
        ("node.lan:0", "has no valid port"),
        ("node.lan:ten", "has no valid port"),
        (":10009", "names no host"),
        ("[::1", "is not [IPv6]:port"),
    ],
)
@pytest.mark.e2e
def test_rpcserver_is_checked(tmp_path: Path, rpcserver: str, fragment: str) -> None:
    # "" used to become localhost:10009 silently; port 99999 said "Connection refused"
    code, out, err = run_lnflowd(
        "--rpcserver", rpcserver, "--lnddir", str(tmp_path / "nolnd"), "--check"
    )
    _one_line_error(code, out, err, 2, "lnd.rpcserver", fragment)


@pytest.mark.e2e
def test_threshold_type_error_reads_as_english(hostile_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "lnflow.toml"
    config.write_text('[analysis]\nmin_failure_count = "many"\n')
    code, out, err = run_lnflowctl("--db", str(hostile_store), "--config", str(config), "analyze")
    last = _one_line_error(code, out, err, 2, "min_failure_count': must be a whole number from 1")
    assert "a int" not in last


_WINDOW = re.compile(r"^window: (\d+) h, (\S+Z) to (\S+Z);")


def _window_hours(line: str) -> tuple[int, float]:
    """(hours named, hours between the two times) of a ``window:`` line."""
    match = _WINDOW.match(line)
    assert match, line
    since, until = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in match.group(2, 3))
    return int(match[1]), (until - since).total_seconds() / 3600


@pytest.mark.e2e
def test_readme_windows_are_what_the_commands_print(hostile_store: Path) -> None:
    """The README's monitor (and opportunities) examples showed an hour-aligned window;
    the commands print exactly the last N hours."""
    code, out, err = run_lnflowctl(
        "--db", str(hostile_store), "monitor", "--duration", "0.0001", "--interval", "0.2"
    )
    assert code == 0, err
    printed = [line for line in out.splitlines() if line.startswith("window: ")]
    assert len(printed) == 1
    named, spanned = _window_hours(printed[0])
    assert (named, spanned) == (1, 1.0)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    examples = [line for line in readme.splitlines() if line.startswith("window: ")]
    assert len(examples) >= 2
    for line in examples:
        named, spanned = _window_hours(line)
        assert spanned == named, line


# --------------------------------------------------------------------------- the rules, as tables


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain alias ⚡ ünïcode", "plain alias ⚡ ünïcode"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1\x9bcsi\x85nel", "c1\\x9bcsi\\x85nel"),
        ("bidi\u202eexe.txt\u2066\u2069", "bidi\\u202eexe.txt\\u2066\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
        ("\\x1b already text", "\\x1b already text"),
    ],
    ids=["plain", "osc", "newlines", "nul-del", "c1", "bidi", "line-separator", "backslash"],
)
def test_printable(text: str, shown: str) -> None:
    from lnflow.text import printable

    assert printable(text) == shown
    assert printable(shown) == shown  # escaping twice changes nothing


def test_printable_text_is_returned_as_is_only_when_nothing_in_it_needs_escaping() -> None:
    """printable() skips its pattern for text str.isprintable() accepts: that must never
    hold for text holding a character the pattern escapes (every code point checked)."""
    import sys

    from lnflow.text import _UNSAFE, printable

    escaped = [c for c in map(chr, range(sys.maxunicode + 1)) if _UNSAFE.match(c)]
    assert len(escaped) > 70  # C0, DEL, C1, the bidi controls and the separators
    assert not [c for c in escaped if c.isprintable()]
    for c in escaped:
        assert printable(f"ok {c} ok") != f"ok {c} ok"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (-5, -5),
        (b"\x01\xff", "01ff"),
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-5", "-5"),
        ("-1.25", "-1.25"),
        ("\t=1", "\\x09=1"),
        ("alias\nrow", "alias\\x0arow"),
        ("fee_insufficient", "fee_insufficient"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_csv_cell(value: object, cell: object) -> None:
    from lnflow.store.export import csv_cell

    assert csv_cell(value) == cell


@pytest.mark.parametrize(
    ("given", "address"),
    [
        ("node.lan", "node.lan:10009"),
        (" node.lan:10010 ", "node.lan:10010"),
        ("[::1]", "[::1]:10009"),
        ("[::1]:10010", "[::1]:10010"),
        ("::1", "::1"),
        ("10.0.0.2:65535", "10.0.0.2:65535"),
    ],
)
def test_rpc_address(given: str, address: str) -> None:
    from lnflow.netaddr import rpc_address

    assert rpc_address(given) == address
