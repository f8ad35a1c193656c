"""lnflow: find the routing revenue an LND node loses to failed forwards."""

__version__ = "0.1.0"
