"""Recording an LND node into the store: the HTLC stream, the forwards ledger and channel
samples. Used by the daemon (``lnflowd``) and by the in-process ``HTLCMonitor``."""

from .jobs import ChannelSampler, ChannelSource, LedgerSource, LedgerSync, guarded
from .recorder import Backoff, HtlcSource, HtlcStreamLike, Recorder, sleep_or_stop
from .storethread import StoreThread

__all__ = [
    "Backoff",
    "ChannelSampler",
    "ChannelSource",
    "HtlcSource",
    "HtlcStreamLike",
    "LedgerSource",
    "LedgerSync",
    "Recorder",
    "StoreThread",
    "guarded",
    "sleep_or_stop",
]
