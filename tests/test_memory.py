"""lnflowd/memory.py: the file pages handed back once the daemon runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lnflowd.memory import release_file_pages

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")


def _read_only_file_mapping() -> str:
    """A line of /proc/self/maps: a read-only mapping of a shared library."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "w" not in fields[1] and ".so" in fields[5]:
            return line
    pytest.skip("no read-only shared-library mapping")


@linux
def test_only_read_only_file_mappings_are_advised(tmp_path: Path) -> None:
    library = _read_only_file_mapping()
    start, end = library.split()[0].split("-")
    maps = tmp_path / "maps"
    maps.write_text(
        "\n".join(
            (
                library,
                # the same range, writable: a data segment or the store's -shm, left alone
                f"{start}-{end} rw-s 00000000 00:00 0 /tmp/store.db-shm",
                f"{start}-{end} rw-p 00000000 00:00 0 ",  # anonymous
                f"{start}-{end} r-xp 00000000 00:00 0 [vdso]",
            )
        )
        + "\n"
    )
    assert release_file_pages(str(maps)) in (0, 1)  # 0: a kernel without MADV_PAGEOUT
    assert release_file_pages(str(tmp_path / "absent")) == 0


@linux
def test_the_process_runs_on_after_its_pages_are_released() -> None:
    release_file_pages()
    # code and constants of libpython, _sqlite3 and libsqlite3 are read back as used
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (499_500,)


_LARGE_BLOCK_AFTER_A_LARGER_ONE = """
import ctypes, sys
from lnflowd.memory import fix_malloc_thresholds

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    sys.exit(3)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
if sys.argv[1] == "fixed":
    assert fix_malloc_thresholds()
libc.free(libc.malloc(4 << 20))  # e.g. one large answer, mapped, then freed
mapped = libc.mallinfo2().hblks
block = libc.malloc(512 << 10)
print(libc.mallinfo2().hblks - mapped)
libc.free(block)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("thresholds", ["fixed", "glibc's own"])
def test_a_large_block_is_mapped_after_a_larger_one_was_freed(thresholds: str) -> None:
    """glibc raises its thresholds after a large block is freed (later ones of that size
    then come from an arena and its top stays resident); fixed, it does not."""
    run = subprocess.run(
        [sys.executable, "-c", _LARGE_BLOCK_AFTER_A_LARGER_ONE, thresholds.split()[0]],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode == 3:
        pytest.skip("not glibc >= 2.33 (mallinfo2)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == (["1"] if thresholds == "fixed" else ["0"])
