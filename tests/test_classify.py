import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnflow.analysis import FailureClass, classify, missed_fee_msat
from lnflow.domain import FAILURE_CLASS_NAMES, FailureDetail, WireFailure

W = WireFailure
D = FailureDetail
C = FailureClass


@pytest.mark.parametrize(
    ("wire", "detail", "expected"),
    [
        # one case per rule of DESIGN §4
        (W.TEMPORARY_CHANNEL_FAILURE, D.INSUFFICIENT_BALANCE, C.LIQUIDITY),
        (W.TEMPORARY_CHANNEL_FAILURE, D.HTLC_EXCEEDS_MAX, C.MAX_HTLC),
        (W.FEE_INSUFFICIENT, D.NO_DETAIL, C.FEE),
        (W.CHANNEL_DISABLED, D.NO_DETAIL, C.AVAILABILITY),
        (W.UNKNOWN_NEXT_PEER, D.NO_DETAIL, C.AVAILABILITY),
        (W.TEMPORARY_CHANNEL_FAILURE, D.LINK_NOT_ELIGIBLE, C.AVAILABILITY),
        (W.CHANNEL_DISABLED, D.FORWARDS_DISABLED, C.AVAILABILITY),
        (W.INCORRECT_CLTV_EXPIRY, D.NO_DETAIL, C.POLICY),
        (W.EXPIRY_TOO_SOON, D.NO_DETAIL, C.POLICY),
        (W.EXPIRY_TOO_FAR, D.NO_DETAIL, C.POLICY),
        (W.AMOUNT_BELOW_MINIMUM, D.NO_DETAIL, C.POLICY),
        # other: lnd's remaining pairs
        (W.TEMPORARY_CHANNEL_FAILURE, D.HTLC_ADD_FAILED, C.LIQUIDITY),
        (W.TEMPORARY_CHANNEL_FAILURE, D.INCOMPLETE_FORWARD, C.OTHER),
        (W.TEMPORARY_CHANNEL_FAILURE, D.CIRCULAR_ROUTE, C.OTHER),
        (W.PERMANENT_CHANNEL_FAILURE, D.ON_CHAIN_TIMEOUT, C.OTHER),
        (W.INVALID_ONION_HMAC, D.ONION_DECODE, C.OTHER),
        (W.TEMPORARY_CHANNEL_FAILURE, D.NO_DETAIL, C.LIQUIDITY),
        # precedence: the first matching rule wins
        (W.FEE_INSUFFICIENT, D.INSUFFICIENT_BALANCE, C.LIQUIDITY),
        (W.FEE_INSUFFICIENT, D.HTLC_EXCEEDS_MAX, C.MAX_HTLC),
        (W.CHANNEL_DISABLED, D.INSUFFICIENT_BALANCE, C.LIQUIDITY),
        (W.UNKNOWN_NEXT_PEER, D.HTLC_EXCEEDS_MAX, C.MAX_HTLC),
        (W.FEE_INSUFFICIENT, D.LINK_NOT_ELIGIBLE, C.FEE),
        (W.AMOUNT_BELOW_MINIMUM, D.FORWARDS_DISABLED, C.AVAILABILITY),
        (W.EXPIRY_TOO_SOON, D.INSUFFICIENT_BALANCE, C.LIQUIDITY),
        (W.INCORRECT_CLTV_EXPIRY, D.LINK_NOT_ELIGIBLE, C.AVAILABILITY),
        # unknown numbers and missing fields
        (12345, 9999, C.OTHER),
        (W.FEE_INSUFFICIENT, 9999, C.FEE),
        (12345, D.INSUFFICIENT_BALANCE, C.LIQUIDITY),
        (None, None, C.OTHER),
        (W.FEE_INSUFFICIENT, None, C.FEE),
        (None, D.LINK_NOT_ELIGIBLE, C.AVAILABILITY),
    ],
    ids=[
        "liquidity",
        "max-htlc",
        "fee",
        "availability-channel-disabled",
        "availability-unknown-next-peer",
        "availability-link-not-eligible",
        "availability-forwards-disabled",
        "policy-incorrect-cltv",
        "policy-expiry-too-soon",
        "policy-expiry-too-far",
        "policy-amount-below-minimum",
        "liquidity-add-failed",
        "other-incomplete-forward",
        "other-circular-route",
        "other-on-chain-timeout",
        "other-onion",
        "liquidity-dust-exposure",
        "liquidity-beats-fee",
        "max-htlc-beats-fee",
        "liquidity-beats-availability",
        "max-htlc-beats-availability",
        "fee-beats-availability",
        "availability-beats-policy",
        "liquidity-beats-policy",
        "availability-detail-beats-policy-wire",
        "unknown-numbers",
        "unknown-detail-known-wire",
        "unknown-wire-known-detail",
        "none",
        "wire-only",
        "detail-only",
    ],
)
def test_classify(wire: int | None, detail: int | None, expected: FailureClass) -> None:
    assert classify(wire, detail) is expected


def test_classify_takes_plain_ints() -> None:
    assert classify(int(W.FEE_INSUFFICIENT), int(D.NO_DETAIL)) is C.FEE
    assert classify(15, 6) is C.LIQUIDITY


@given(st.one_of(st.none(), st.integers(-(2**31), 2**31)), st.none() | st.integers(-5, 2000))
def test_classify_is_total(wire: int | None, detail: int | None) -> None:
    assert isinstance(classify(wire, detail), FailureClass)


def test_labels_match_domain_names() -> None:
    assert tuple(c.label for c in FailureClass) == FAILURE_CLASS_NAMES
    assert [int(c) for c in FailureClass] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("incoming", "outgoing", "expected"),
    [
        (1_001_000, 1_000_000, 1_000),
        (1_000_000, 1_000_000, 0),
        (999_000, 1_000_000, 0),
        (None, 1_000_000, 0),
        (1_000_000, None, 0),
        (None, None, 0),
        (2**64 - 1, 1, 2**64 - 2),
    ],
    ids=["fee", "zero", "negative-floors-at-0", "no-in", "no-out", "neither", "big-exact"],
)
def test_missed_fee(incoming: int | None, outgoing: int | None, expected: int) -> None:
    assert missed_fee_msat(incoming, outgoing) == expected
