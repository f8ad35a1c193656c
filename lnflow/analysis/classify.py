"""Failure classes of local forward failures (DESIGN §4) and their missed fee.

The rule table, first match wins::

    class         rule
    liquidity     failure_detail INSUFFICIENT_BALANCE | HTLC_ADD_FAILED,
                  or wire TEMPORARY_CHANNEL_FAILURE with NO_DETAIL
    max_htlc      failure_detail HTLC_EXCEEDS_MAX
    fee           wire FEE_INSUFFICIENT
    availability  wire CHANNEL_DISABLED | UNKNOWN_NEXT_PEER,
                  or detail LINK_NOT_ELIGIBLE | FORWARDS_DISABLED
    policy        wire INCORRECT_CLTV_EXPIRY | EXPIRY_TOO_SOON | EXPIRY_TOO_FAR
                  | AMOUNT_BELOW_MINIMUM
    other         anything else, unknown numbers and None included

The class numbers are in rule order, so "first match" is the smallest class
found by looking the detail and the wire code up separately. That is two dict
lookups per event: :func:`classify` runs on the recording hot path.

HTLC_ADD_FAILED (the outgoing link's mailbox gave up: commitment slots, in-flight
limit, fee buffer, dust exposure, mailbox expiry) and a bare TEMPORARY_CHANNEL_FAILURE
(dust exposure) are capacity problems of the chosen outgoing channel, so liquidity;
lnd gives them no amounts, so their missed fee is unknown (see docs/lnd-versions.md).
"""

from __future__ import annotations

from lnflow.domain import FailureClass, FailureDetail, WireFailure

# FailureClass is lnflow.domain's (its labels, columns and abbreviations live there);
# re-exported here, beside the rules that pick it
__all__ = ["FailureClass", "classify", "missed_fee_msat"]

_OTHER = FailureClass.OTHER
_TEMPORARY = int(WireFailure.TEMPORARY_CHANNEL_FAILURE)
_NO_DETAIL = int(FailureDetail.NO_DETAIL)

# Keyed by plain ints (IntEnum members hash as their value), so numbers read
# from the wire or the store need no conversion; None and unknown numbers miss.
_BY_DETAIL: dict[int | None, FailureClass] = {
    FailureDetail.INSUFFICIENT_BALANCE: FailureClass.LIQUIDITY,
    FailureDetail.HTLC_ADD_FAILED: FailureClass.LIQUIDITY,
    FailureDetail.HTLC_EXCEEDS_MAX: FailureClass.MAX_HTLC,
    FailureDetail.LINK_NOT_ELIGIBLE: FailureClass.AVAILABILITY,
    FailureDetail.FORWARDS_DISABLED: FailureClass.AVAILABILITY,
}

_BY_WIRE: dict[int | None, FailureClass] = {
    WireFailure.FEE_INSUFFICIENT: FailureClass.FEE,
    WireFailure.CHANNEL_DISABLED: FailureClass.AVAILABILITY,
    WireFailure.UNKNOWN_NEXT_PEER: FailureClass.AVAILABILITY,
    WireFailure.INCORRECT_CLTV_EXPIRY: FailureClass.POLICY,
    WireFailure.EXPIRY_TOO_SOON: FailureClass.POLICY,
    WireFailure.EXPIRY_TOO_FAR: FailureClass.POLICY,
    WireFailure.AMOUNT_BELOW_MINIMUM: FailureClass.POLICY,
}


def classify(wire_failure: int | None, failure_detail: int | None) -> FailureClass:
    """The class of a local failure from lnd's wire code and failure detail."""
    if wire_failure == _TEMPORARY and failure_detail == _NO_DETAIL:
        return FailureClass.LIQUIDITY
    by_detail = _BY_DETAIL.get(failure_detail, _OTHER)
    by_wire = _BY_WIRE.get(wire_failure, _OTHER)
    return by_detail if by_detail <= by_wire else by_wire


def missed_fee_msat(incoming_amt_msat: int | None, outgoing_amt_msat: int | None) -> int:
    """Fee a failed forward would have earned: ``in − out`` msat, floor 0, 0 if unknown."""
    if incoming_amt_msat is None or outgoing_amt_msat is None:
        return 0
    fee = incoming_amt_msat - outgoing_amt_msat
    return fee if fee > 0 else 0
