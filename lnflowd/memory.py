"""glibc heap settings for the long-running daemon (no-ops where glibc is absent).

Measured on lnflowd (bench/README.md): glibc gives every thread that mallocs its own
arena (up to 8 per core); lnflowd's ~10 threads (store writer, asyncio's workers, and
grpc's until gRPC moved to the lnd gateway process) left ~13 MB free but resident in 12
arenas after the first ledger sync. Two arenas
keep the store thread and the event loop apart and leave ~4 MB free. Trimming after a
scheduled job hands the pages it freed back to the kernel.

glibc also raises its mmap threshold to the size of any mmapped block freed (up to
32 MiB), and its trim threshold to twice that: after one large block is freed, every
later block up to its size is carved from an arena, and an arena keeps up to twice that
much free at its top. ``malloc_trim`` does not shrink a thread arena's top, so the
second arena grew to 3.5 MB, 3.3 of them free and resident, by 1.5 M events (0.8 MB with
the thresholds fixed). :func:`fix_malloc_thresholds` pins both at glibc's defaults
(128 KiB), which turns the raising off.

The shared libraries' pages that only start-up used (creating the store, the first
calls; the config is validated in a child, lnflow.settings) stay resident otherwise: about
4 MB of the main process's RSS while recording. :func:`release_file_pages` hands them
back once the daemon runs; pages still in use come back on their next access.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["fix_malloc_thresholds", "limit_malloc_arenas", "release_file_pages", "trim_heap"]

_M_TRIM_THRESHOLD = -1  # mallopt(3)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MADV_PAGEOUT = 21  # madvise(2), Linux 5.4+


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


def fix_malloc_thresholds(threshold: int = 128 * 1024) -> bool:
    """Blocks of ``threshold`` bytes or more get their own mapping (returned when
    freed), and an arena keeps at most that much free at its top; glibc no longer
    raises either threshold. False if not glibc."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold)
    )


def trim_heap() -> None:
    """Return free heap pages (of every arena) to the kernel: ``malloc_trim(0)``."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def release_file_pages(maps: str = "/proc/self/maps") -> int:
    """Ask the kernel to reclaim the resident pages of every read-only file mapping
    (the shared libraries' code and constants): ``madvise(MADV_PAGEOUT)``.

    Pages another process maps as well are left alone by the kernel; a page this
    process touches again is read back on that access. Returns how many mappings were
    advised; 0 where that is not possible (not Linux, a kernel before 5.4).
    """
    madvise = getattr(_LIBC, "madvise", None)
    if madvise is None:
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    try:
        with open(maps, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or "w" in fields[1] or not fields[5].startswith("/"):
                    continue  # writable (data, the store's -shm), anonymous, [vdso], ...
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if madvise(start, end - start, _MADV_PAGEOUT) == 0:
                    advised += 1
    except OSError:
        return advised
    return advised
