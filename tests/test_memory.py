"""lnflowd/memory.py: the file pages handed back once the daemon runs."""

from __future__ import annotations

import sqlite3
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
