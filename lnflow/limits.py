"""The ranges of the analysis thresholds: the settings' checks (lnflow.config) and
lnflowctl's threshold flags take them from here: one table, one truth.

Each range is inclusive, ``(lowest, highest)``; the ratios start at 0.01 because 0 would
turn their rule off silently. Documented in config/lnflow.example.toml.
"""

from __future__ import annotations

__all__ = ["ANALYSIS_RANGES", "MAX_SATS"]

MAX_SATS = 21_000_000 * 100_000_000  # every bitcoin there will be, in sats

ANALYSIS_RANGES: dict[str, tuple[float, float]] = {
    "min_failure_count": (1, 1_000_000),
    "min_missed_sats": (0, MAX_SATS),
    "gossip_grace_h": (0, 24 * 14),
    "min_fee_ppm": (0, 1_000_000),
    "baseline_days": (1, 366),
    "max_cost_share": (0.01, 1),
    "inbound_ratio": (0.01, 1),
    "source_ratio": (0.01, 1),
}
