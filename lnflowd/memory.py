"""glibc heap settings for the long-running daemon (no-ops where glibc is absent).

Measured on lnflowd (bench/README.md): glibc gives every thread that mallocs its own
arena (up to 8 per core); lnflowd's ~10 threads (store writer, asyncio's workers, and
grpc's until gRPC moved to the lnd gateway process) left ~13 MB free but resident in 12
arenas after the first ledger sync. Two arenas
keep the store thread and the event loop apart and leave ~4 MB free. Trimming after a
scheduled job hands the pages it freed back to the kernel.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["limit_malloc_arenas", "trim_heap"]

_M_ARENA_MAX = -8  # mallopt(3)


def _libc() -> Any:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _libc()


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; call before threads start. False if not glibc."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def trim_heap() -> None:
    """Return free heap pages (of every arena) to the kernel: ``malloc_trim(0)``."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
