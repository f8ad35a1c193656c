"""The policies file: charge-lnd's format, read and checked at load (lnflow.policy.rules)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import Action
from lnflow.errors import ConfigError, PolicyFileError
from lnflow.policy import (
    CRITERIA,
    PROPERTIES,
    Properties,
    Rules,
    Strategy,
    load_rules,
    parse_rules,
)

ROOT = Path(__file__).resolve().parent.parent
PUB_A = "02" + "a1" * 32
PUB_B = "03" + "b2" * 32


def one(text: str) -> Rules:
    return parse_rules(text, source="p.conf")


def criterion(rules: Rules, key: str) -> object:
    (section,) = rules.sections
    return section.get(key)


# --------------------------------------------------------------------------- structure


def test_sections_keep_file_order_and_default_stands_apart() -> None:
    rules = one(
        "[default]\nstrategy = static\nfee_ppm = 10\n"
        "\n[mydefaults]\nbase_fee_msat = 1_000\n"
        "\n[b]\nchan.min_capacity = 5\nstrategy = ignore\n"
        "\n[a]\nchan.private = true\nstrategy = static\n"
    )
    assert [s.name for s in rules.sections] == ["mydefaults", "b", "a"]
    assert [s.final for s in rules.sections] == [False, True, True]
    assert rules.default is not None and rules.default.strategy is Strategy.STATIC
    assert rules.default.properties.fee_ppm == 10
    assert [s.line for s in rules.sections] == [5, 8, 12]
    assert rules.sections[1].criteria[0].line == 9


def test_keys_are_lower_cased() -> None:
    rules = one("[a]\nChan.Min_Capacity = 7\nSTRATEGY = ignore\n")
    assert criterion(rules, "chan.min_capacity") == 7
    assert rules.sections[0].strategy is Strategy.IGNORE


def test_extended_interpolation_reads_other_sections() -> None:
    rules = one(
        "[base]\nfee_ppm = 2_00\nbase_fee_msat = 0\n"
        "[b]\nchan.min_capacity = 1\nstrategy = static\nfee_ppm = ${base:fee_ppm}\n"
        "base_fee_msat = ${fee_ppm}\n"
    )
    assert rules.sections[1].properties.fee_ppm == 200
    assert rules.sections[1].properties.base_fee_msat == 200  # ${key}: the same section


def test_every_property_parses(tmp_path: Path) -> None:
    (tmp_path / "other.conf").write_text("[default]\nstrategy = ignore\n")
    rules = parse_rules(
        "[a]\nstrategy = proportional\nbase_fee_msat = 1_000\nfee_ppm = 5\n"
        "min_fee_ppm = 1\nmax_fee_ppm = 2_000\nmin_htlc_msat = 1_000\nmax_htlc_msat = 10_000_000\n"
        "max_htlc_msat_ratio = 0.5\ntime_lock_delta = 80\nmin_fee_ppm_delta = 10\n"
        "min_inbound_fee_ppm_delta = 3\ninbound_fee_ppm = -50\ninbound_base_fee_msat = -1_000\n"
        "inbound_level_ppm = 100\nsum_peer_chans = yes\nconfig_file = other.conf\n"
        "max_fee_step_percent = 10\n",
        base_dir=tmp_path,
    )
    assert rules.sections[0].properties == Properties(
        strategy=Strategy.PROPORTIONAL,
        base_fee_msat=1000,
        fee_ppm=5,
        min_fee_ppm=1,
        max_fee_ppm=2000,
        min_htlc_msat=1000,
        max_htlc_msat=10_000_000,
        max_htlc_msat_ratio=Fraction(1, 2),
        time_lock_delta=80,
        min_fee_ppm_delta=10,
        min_inbound_fee_ppm_delta=3,
        inbound_fee_ppm=-50,
        inbound_base_fee_msat=-1000,
        inbound_level_ppm=100,
        sum_peer_chans=True,
        config_file="other.conf",
        max_fee_step_percent=10,
    )


def test_properties_over_lays_only_what_is_set() -> None:
    below = Properties(base_fee_msat=1, fee_ppm=2, min_fee_ppm_delta=3)
    above = Properties(fee_ppm=20, strategy=Strategy.STATIC)
    assert above.over(below) == Properties(
        strategy=Strategy.STATIC, base_fee_msat=1, fee_ppm=20, min_fee_ppm_delta=3
    )


def test_every_documented_criterion_is_known() -> None:
    """charge-lnd's README criteria (onchain.* aside) and lnflow's own, nothing else."""
    chan = {
        "id", "initiator", "private", "disabled", "activity_period",
        "activity_period_ignore_channel_age",
    } | {
        f"{b}_{n}"
        for n in (
            "capacity", "age", "ratio", "local_balance", "remote_balance", "base_fee_msat",
            "fee_ppm", "htlcs_in", "htlcs_out", "sats_in", "sats_out", "htlcs_ratio",
            "sats_ratio", "count_pending_htlcs", "next_pending_htlc_expiry",
        )
        for b in ("min", "max")
    }  # fmt: skip
    node = {"id"} | {
        f"{b}_{n}"
        for n in (
            "channels", "capacity", "shared_channels_active", "shared_channels_inactive",
            "shared_capacity_active", "shared_capacity_inactive", "shared_ratio",
            "shared_ratio_active", "shared_ratio_inactive",
        )
        for b in ("min", "max")
    }  # fmt: skip
    lnflow = {
        "recommendation", "dominant_class", "min_urgency", "min_missed_sats", "min_failures",
        "min_fees_earned_sats", "max_fees_earned_sats", "min_forwards", "max_forwards",
        "window_hours",
    }  # fmt: skip
    expected = (
        {f"chan.{k}" for k in chan} | {f"node.{k}" for k in node} | {f"lnflow.{k}" for k in lnflow}
    )
    assert set(CRITERIA) == expected
    assert "strategy" in PROPERTIES and not any("." in k for k in PROPERTIES)


# --------------------------------------------------------------------------- values

VALUES = [
    ("int", "chan.min_capacity", "500000", 500_000),
    ("int-underscores", "chan.min_capacity", "1_000_000", 1_000_000),
    ("int-odd-grouping", "node.min_capacity", "5_000_0000", 50_000_000),
    ("ratio", "chan.min_ratio", "0.9", Fraction(9, 10)),
    ("ratio-one", "chan.max_ratio", "1", Fraction(1)),
    ("ratio-zero", "chan.max_ratio", "0", Fraction(0)),
    ("expiry-negative", "chan.max_next_pending_htlc_expiry", "-3", -3),
    ("bool-true", "chan.private", "true", True),
    ("bool-yes", "chan.private", "yes", True),
    ("bool-on", "chan.initiator", "on", True),
    ("bool-1", "chan.initiator", "1", True),
    ("bool-false", "chan.disabled", "false", False),
    ("bool-no", "chan.disabled", "No", False),
    ("bool-off", "chan.private", "off", False),
    ("bool-0", "chan.private", "0", False),
    ("chan-id-decimal", "chan.id", "699714326609297409", frozenset({699714326609297409})),
    ("chan-id-x", "chan.id", "636374x680x1", frozenset({(636374 << 40) | (680 << 16) | 1})),
    ("chan-id-colon", "chan.id", "636374:680:1", frozenset({(636374 << 40) | (680 << 16) | 1})),
    (
        "chan-id-list",
        "chan.id",
        "1x2x3, 4x5x6",
        frozenset({(1 << 40) | (2 << 16) | 3, (4 << 40) | (5 << 16) | 6}),
    ),
    ("node-id", "node.id", PUB_A.upper(), frozenset({PUB_A})),
    ("node-id-list", "node.id", f"{PUB_A},{PUB_B}", frozenset({PUB_A, PUB_B})),
    ("node-id-lines", "node.id", f"{PUB_A},\n  {PUB_B}", frozenset({PUB_A, PUB_B})),
    ("node-id-lines-no-comma", "node.id", f"{PUB_A}\n  {PUB_B}", frozenset({PUB_A, PUB_B})),
    ("recommendation", "lnflow.recommendation", "lower_fees", frozenset({Action.LOWER_FEES})),
    (
        "recommendations",
        "lnflow.recommendation",
        "lower_fees, raise_max_htlc",
        frozenset({Action.LOWER_FEES, Action.RAISE_MAX_HTLC}),
    ),
    ("dominant-class", "lnflow.dominant_class", "fee", frozenset({FailureClass.FEE})),
    (
        "dominant-classes",
        "lnflow.dominant_class",
        "liquidity,max_htlc",
        frozenset({FailureClass.LIQUIDITY, FailureClass.MAX_HTLC}),
    ),
    ("min-urgency", "lnflow.min_urgency", "40", 40),
    ("min-missed", "lnflow.min_missed_sats", "1_000", 1000),
]


@pytest.mark.parametrize(
    ("key", "text", "value"), [v[1:] for v in VALUES], ids=[v[0] for v in VALUES]
)
def test_value_parsing(key: str, text: str, value: object) -> None:
    rules = one(f"[a]\n{key} = {text}\nstrategy = ignore\n")
    assert criterion(rules, key) == value


PERIODS = [
    ("seconds-bare", "30", 30),
    ("seconds", "30s", 30),
    ("minutes", "5m", 300),
    ("hours", "3h", 10_800),
    ("days", "7d", 604_800),
    ("underscores", "1_000s", 1000),
]


@pytest.mark.parametrize(("text", "seconds"), [p[1:] for p in PERIODS], ids=[p[0] for p in PERIODS])
def test_activity_period(text: str, seconds: int) -> None:
    rules = one(f"[a]\nchan.activity_period = {text}\nchan.max_htlcs_out = 0\nstrategy = ignore\n")
    assert criterion(rules, "chan.activity_period") == seconds
    assert rules.activity_periods_s(86_400) == {seconds}


def test_activity_periods_include_lnflow_windows() -> None:
    rules = one(
        "[a]\nlnflow.min_forwards = 1\nstrategy = ignore\n"
        "[b]\nlnflow.max_fees_earned_sats = 10\nlnflow.window_hours = 48\nstrategy = ignore\n"
        "[c]\nchan.activity_period = 1h\nchan.min_sats_in = 1\nstrategy = ignore\n"
        "[d]\nlnflow.min_urgency = 5\nstrategy = ignore\n"
    )
    assert rules.activity_periods_s(86_400) == {86_400, 48 * 3600, 3600}


@given(number=st.integers(0, 10**15), group=st.integers(1, 4))
def test_integers_read_with_any_underscore_grouping(number: int, group: int) -> None:
    digits = str(number)
    head = len(digits) % group or group
    grouped = "_".join(
        [digits[:head]] + [digits[i : i + group] for i in range(head, len(digits), group)]
    )
    assert criterion(one(f"[a]\nchan.min_capacity = {grouped}\n"), "chan.min_capacity") == number


def test_activity_periods_of_included_files(tmp_path: Path) -> None:
    (tmp_path / "inner.conf").write_text(
        "[idle]\nchan.activity_period = 3d\nchan.max_htlcs_out = 0\nstrategy = ignore\n"
    )
    (tmp_path / "outer.conf").write_text(
        "[default]\nstrategy = use_config\nconfig_file = inner.conf\n"
    )
    assert load_rules(tmp_path / "outer.conf").activity_periods_s(3_600) == {3 * 86_400}


def test_id_lists_from_files(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "chans.txt").write_text(
        "# pool channels\n1x2x3\n\n4:5:6, 7  # trailing comment\n"
    )
    (tmp_path / "nodes.txt").write_text(f"{PUB_A}\n# {PUB_B} is no friend\n")
    conf = tmp_path / "policies.conf"
    conf.write_text(
        "[pool]\nchan.id = file://lists/chans.txt, 9\nstrategy = ignore\n"
        f"[friends]\nnode.id = file://{tmp_path}/nodes.txt,{PUB_B}\nstrategy = ignore\n"
    )
    rules = load_rules(conf)
    assert rules.sections[0].get("chan.id") == frozenset(
        {(1 << 40) | (2 << 16) | 3, (4 << 40) | (5 << 16) | 6, 7, 9}
    )
    assert rules.sections[1].get("node.id") == frozenset({PUB_A, PUB_B})


def test_use_config_loads_the_named_file_relative_to_the_naming_one(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.conf").write_text("[default]\nstrategy = static\nfee_ppm = 7\n")
    conf = tmp_path / "outer.conf"
    conf.write_text("[default]\nstrategy = use_config\nconfig_file = file://sub/inner.conf\n")
    rules = load_rules(conf)
    inner = rules.includes["file://sub/inner.conf"]
    assert inner.default is not None and inner.default.properties.fee_ppm == 7
    assert len(list(rules.all_rules())) == 2


def test_the_shipped_example_loads() -> None:
    rules = load_rules(ROOT / "config" / "policies.example.conf")
    names = [s.name for s in rules.sections]
    assert rules.default is not None
    assert any(s.strategy is Strategy.OPPORTUNITY for s in rules.sections)
    assert any(not s.final for s in rules.sections)
    assert any(c.key.startswith("lnflow.") for s in rules.sections for c in s.criteria)
    assert len(names) == len(set(names))


CHARGE_LND_EXAMPLES = {
    "all-channels-proportional": """
# all channels fees according to ratio to auto-balance
[default]
strategy = proportional
base_fee_msat = 1000
min_fee_ppm = 100
max_fee_ppm = 300
min_fee_ppm_delta = 10
""",
    "incentivise-low-flow": """
[default]
strategy = static
fee_ppm = 200

[very-low-out-flow]
chan.activity_period=14d
chan.max_htlcs_out = 0
strategy = static
fee_ppm = 50
""",
    "static-but-incentivise-extremes": """
[default]
strategy = static
fee_ppm = 200

[mydefaults]
base_fee_msat = 1000
min_fee_ppm_delta = 10

[very-low-local-balance]
chan.max_local_balance = 30_000
strategy = disable

[high-local-balance]
chan.min_ratio = 0.9
strategy = static
fee_ppm = 100
""",
    "multiple-channels": """
[default]
strategy = proportional
sum_peer_chans=true
base_fee_msat = 0
min_fee_ppm = 0
max_fee_ppm = 400

[avoid-nodes-with-high-inactive-ratio]
node.min_shared_ratio = 0.90
node.min_shared_ratio_inactive = 0.99
strategy = disable

[reduce-fee-for-low-inactive-capacity]
node.max_shared_capacity_inactive = 100_000_000
max_fee_ppm = 200
""",
}


@pytest.mark.parametrize("text", CHARGE_LND_EXAMPLES.values(), ids=CHARGE_LND_EXAMPLES.keys())
def test_charge_lnd_style_files_load(text: str) -> None:
    rules = one(text)
    assert rules.default is not None


# --------------------------------------------------------------------------- refusals

REFUSALS = [
    ("unknown-key", "[a]\nfee_pppm = 1\n", r"p.conf:2: \[a\] fee_pppm: unknown key"),
    (
        "unknown-chan",
        "[a]\n\nchan.min_capcity = 1\n",
        r"p.conf:3: \[a\] chan.min_capcity: unknown chan",
    ),
    ("unknown-node", "[a]\nnode.min_peers = 1\n", r"p.conf:2: \[a\] node.min_peers: unknown node"),
    (
        "unknown-lnflow",
        "[a]\nlnflow.max_urgency = 1\n",
        r":2: \[a\] lnflow.max_urgency: unknown lnflow",
    ),
    ("unknown-namespace", "[a]\nfoo.bar = 1\n", r":2: \[a\] foo.bar: unknown namespace 'foo'"),
    (
        "onchain",
        "[a]\nonchain.min_fee_rate = 5\n",
        r":2: \[a\] onchain.min_fee_rate: onchain\.\* criteria are not supported",
    ),
    (
        "onchain-synced",
        "[a]\nonchain.synced_to_chain = false\n",
        r":2: \[a\] onchain.synced_to_chain: onchain",
    ),
    (
        "strategy-cost",
        "[a]\nstrategy = cost\n",
        r":2: \[a\] strategy: strategy cost is not supported",
    ),
    (
        "strategy-onchain-fee",
        "[a]\nstrategy = onchain_fee\n",
        r":2: \[a\] strategy: strategy onchain_fee is not supported",
    ),
    (
        "cost-factor",
        "[a]\nstrategy = static\ncost_factor = 1.5\n",
        r":3: \[a\] cost_factor: the cost strategy",
    ),
    (
        "onchain-fee-btc",
        "[a]\nonchain_fee_btc = 0.1\n",
        r":2: \[a\] onchain_fee_btc: the onchain_fee strategy",
    ),
    (
        "onchain-fee-numblocks",
        "[a]\nonchain_fee_numblocks = 6\n",
        r":2: \[a\] onchain_fee_numblocks: the onchain_fee",
    ),
    ("cb-max-pending", "[a]\ncb_max_pending = 3\n", r":2: \[a\] cb_max_pending: circuitbreaker"),
    ("cb-mode", "[a]\ncb_mode = 1\n", r":2: \[a\] cb_mode: circuitbreaker"),
    (
        "unknown-strategy",
        "[a]\nstrategy = magic\n",
        r":2: \[a\] strategy: 'magic' is not a strategy",
    ),
    ("bad-int", "[a]\nfee_ppm = 1.5\n", r":2: \[a\] fee_ppm: '1.5' is not a whole number"),
    (
        "bad-int-text",
        "[a]\nchan.min_capacity = lots\n",
        r":2: \[a\] chan.min_capacity: 'lots' is not",
    ),
    ("negative-count", "[a]\nfee_ppm = -1\n", r":2: \[a\] fee_ppm: '-1' is not a whole number ≥ 0"),
    (
        "zero-time-lock-delta",
        "[a]\ntime_lock_delta = 0\n",
        r":2: \[a\] time_lock_delta: '0' is not a whole number ≥ 1",
    ),
    (
        "zero-max-htlc",
        "[a]\nmax_htlc_msat = 0\n",
        r":2: \[a\] max_htlc_msat: '0' is not a whole number ≥ 1",
    ),
    (
        "ratio-above-one",
        "[a]\nchan.min_ratio = 1.5\n",
        r":2: \[a\] chan.min_ratio: '1.5' is not a decimal from 0 to 1",
    ),
    (
        "ratio-text",
        "[a]\nchan.min_ratio = half\n",
        r":2: \[a\] chan.min_ratio: 'half' is not a decimal",
    ),
    (
        "max-htlc-ratio-zero",
        "[a]\nmax_htlc_msat_ratio = 0\n",
        r":2: \[a\] max_htlc_msat_ratio: '0' is not a decimal above 0",
    ),
    (
        "step-percent",
        "[a]\nmax_fee_step_percent = 150\n",
        r":2: \[a\] max_fee_step_percent: '150' is not a whole number from 1 to 100",
    ),
    (
        "bad-bool",
        "[a]\nchan.private = maybe\n",
        r":2: \[a\] chan.private: 'maybe' is not true or false",
    ),
    (
        "bad-period",
        "[a]\nchan.activity_period = 2w\n",
        r":2: \[a\] chan.activity_period: '2w' is not a period",
    ),
    (
        "zero-period",
        "[a]\nchan.activity_period = 0d\n",
        r":2: \[a\] chan.activity_period: '0d' is not a period",
    ),
    ("bad-chan-id", "[a]\nchan.id = 12ab\n", r":2: \[a\] chan.id: '12ab' is not a channel id"),
    ("bad-pubkey", "[a]\nnode.id = 02abc\n", r":2: \[a\] node.id: '02abc' is not a node pubkey"),
    ("empty-list", "[a]\nnode.id = ,\n", r":2: \[a\] node.id: empty list"),
    (
        "bad-action",
        "[a]\nlnflow.recommendation = raise_fees\n",
        r":2: \[a\] lnflow.recommendation: 'raise_fees' is not recommendations",
    ),
    (
        "bad-class",
        "[a]\nlnflow.dominant_class = onion\n",
        r":2: \[a\] lnflow.dominant_class: 'onion' is not failure classes",
    ),
    (
        "zero-window",
        "[a]\nlnflow.window_hours = 0\nlnflow.min_forwards = 1\n",
        r":2: \[a\] lnflow.window_hours: '0' is not a whole number ≥ 1",
    ),
    (
        "duplicate-section",
        "[a]\nfee_ppm = 1\n[a]\nfee_ppm = 2\n",
        r"p.conf:3: \[a\]: section appears twice",
    ),
    (
        "duplicate-key",
        "[a]\nfee_ppm = 1\nfee_ppm = 2\n",
        r"p.conf:3: \[a\] fee_ppm: key appears twice",
    ),
    ("key-before-section", "fee_ppm = 1\n[a]\n", r"p.conf:1: a key before the first \[section\]"),
    ("not-key-value", "[a]\nfee_ppm 1\n", r"p.conf:2: not a 'key = value' line: fee_ppm 1"),
    (
        "DEFAULT",
        "[DEFAULT]\nfee_ppm = 1\n[a]\nstrategy = ignore\n",
        r"p.conf:1: \[DEFAULT\] would add its keys",
    ),
    (
        "default-criteria",
        "[default]\nstrategy = static\nchan.min_ratio = 0.5\n",
        r":3: \[default\] chan.min_ratio: \[default\] applies when nothing matched",
    ),
    (
        "default-no-strategy",
        "[default]\nfee_ppm = 1\n",
        r"p.conf:1: \[default\]: \[default\] needs a strategy",
    ),
    (
        "activity-without-period",
        "[a]\nchan.max_htlcs_out = 0\n",
        r":2: \[a\] chan.max_htlcs_out: needs chan.activity_period",
    ),
    (
        "ignore-age-without-period",
        "[a]\nchan.activity_period_ignore_channel_age = true\n",
        r":2: \[a\] chan.activity_period_ignore_channel_age: needs chan.activity_period",
    ),
    (
        "window-alone",
        "[a]\nlnflow.window_hours = 24\nlnflow.min_urgency = 1\n",
        r":2: \[a\] lnflow.window_hours: needs lnflow.min/max_fees_earned_sats",
    ),
    (
        "min-above-max-fee",
        "[a]\nmin_fee_ppm = 500\nmax_fee_ppm = 100\n",
        r":3: \[a\] max_fee_ppm: below min_fee_ppm \(100 < 500\)",
    ),
    (
        "interpolation",
        "[a]\nfee_ppm = ${b:fee_ppm}\n",
        r":2: \[a\] fee_ppm: '\$\{b:fee_ppm\}': the \$\{...\} reference does not resolve",
    ),
    (
        "use-config-missing",
        "[default]\nstrategy = use_config\nconfig_file = nowhere.conf\n",
        r":3: \[default\] config_file: no such policies file: .*nowhere.conf",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused_at_load_in_one_line(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_rules(text, source="p.conf", base_dir=tmp_path)
    assert "\n" not in str(caught.value)
    assert re.search(message, str(caught.value)), str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_refused_entry_in_an_id_file_names_both_lines(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("1x2x3\n# ok\nnot-a-channel\n")
    with pytest.raises(
        PolicyFileError, match=r"p.conf:3: \[a\] chan.id: .*ids.txt:3: 'not-a-channel'"
    ):
        parse_rules("[a]\n\nchan.id = file://ids.txt\n", source="p.conf", base_dir=tmp_path)


def test_refused_missing_id_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"p.conf:2: \[a\] node.id: cannot read id list"):
        parse_rules("[a]\nnode.id = file://gone.txt\n", source="p.conf", base_dir=tmp_path)


def test_refused_use_config_loop(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("[default]\nstrategy = use_config\nconfig_file = b.conf\n")
    (tmp_path / "b.conf").write_text(
        "[x]\nchan.private = true\nstrategy = use_config\nconfig_file = a.conf\n"
    )
    with pytest.raises(
        PolicyFileError,
        match=r"b.conf:4: \[x\] config_file: use_config loops: .*a.conf -> .*b.conf -> .*a.conf",
    ):
        load_rules(tmp_path / "a.conf")


def test_refused_self_include(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("[default]\nstrategy = use_config\nconfig_file = a.conf\n")
    with pytest.raises(PolicyFileError, match="use_config loops"):
        load_rules(tmp_path / "a.conf")


def test_refused_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read the policies file"):
        load_rules(tmp_path / "missing.conf")


def test_an_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "inner.conf").write_text("[default]\nstrategy = static\nfee_pm = 1\n")
    (tmp_path / "outer.conf").write_text(
        "[default]\nstrategy = use_config\nconfig_file = inner.conf\n"
    )
    with pytest.raises(PolicyFileError, match=r"inner.conf:3: \[default\] fee_pm: unknown key"):
        load_rules(tmp_path / "outer.conf")
