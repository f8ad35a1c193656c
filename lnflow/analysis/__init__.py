"""Pure analysis over domain records: no I/O, no clocks (time is passed in)."""

from .classify import FailureClass, classify, missed_fee_msat

__all__ = ["FailureClass", "classify", "missed_fee_msat"]
