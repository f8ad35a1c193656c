"""The hand-written exposition text parses as Prometheus' format says, whatever the
label values hold."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lnflowd.exposition import family, labels, number

VALUES = {
    "plain": "0327f763c849bfd218910e41eef74f5a737989358ab3565f185e1a61bb7df445b8",
    "quote": 'alias "x"',
    "backslash": "a\\b",
    "newline": "two\nlines",
    "empty": "",
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_label_values_round_trip(value: str) -> None:
    text = family("lnflow_x_total", "counter", "doc", [(labels((("peer", value),)), 7)])
    (fam,) = text_string_to_metric_families(text)
    (sample,) = fam.samples
    assert fam.type == "counter" and sample.labels == {"peer": value} and sample.value == 7


def test_big_integers_stay_exact() -> None:
    msat = 2**53 + 1
    assert family("m", "gauge", "d", [("", msat)]).endswith(f"m {msat}\n")


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (0.25, "0.25"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN")],
)
def test_number(value: float, text: str) -> None:
    assert number(value) == text


def test_no_labels_no_braces() -> None:
    assert labels(()) == ""
    assert family("g", "gauge", "d", [("", 1)]) == "# HELP g d\n# TYPE g gauge\ng 1\n"
