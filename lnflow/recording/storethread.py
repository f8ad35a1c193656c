"""One thread owns every store write, so SQLite sees a single writer and the
event loop never blocks on disk."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, ParamSpec, TypeVar

from sqlalchemy.exc import OperationalError

from lnflow.errors import StoreWriteError

__all__ = ["OS_THREAD_NAME", "StoreThread"]

#: the store thread's name for the operating system (``top -H``, ``ps -L``,
#: ``/proc/PID/task/TID/comm``): most of lnflowd's CPU is spent on it
OS_THREAD_NAME = "lnflow-store"

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class StoreThread(Generic[T]):
    def __init__(self, target: T, label: str = "") -> None:
        #: the object whose methods run on the thread: ``call(st.target.method, ...)``
        self.target = target
        #: how errors name the store (its path)
        self.label = label
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="store-writer",
            initializer=_name_os_thread,
            initargs=(OS_THREAD_NAME,),
        )

    async def call(self, method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``method(*args, **kwargs)`` (a method of ``target``) on the store thread.

        The write completes even if the awaiting task is cancelled meanwhile. SQLite
        refusing it (disk full, read-only file, I/O error, locked) raises
        :class:`~lnflow.errors.StoreWriteError`; any other error is a bug and stays as is.
        """
        loop = asyncio.get_running_loop()
        bound = functools.partial(method, *args, **kwargs)
        try:
            return await asyncio.shield(loop.run_in_executor(self._pool, bound))
        except OperationalError as exc:
            reason = str(exc.orig) if exc.orig is not None else str(exc)
            where = f" {self.label}" if self.label else ""
            raise StoreWriteError(
                f"cannot write the store{where}: {reason}"
                " (free space on its disk, or make the file writable)",
                reason,
            ) from exc

    def close(self) -> None:
        """Wait for queued writes, then stop the thread."""
        self._pool.shutdown(wait=True)


def _name_os_thread(name: str) -> None:
    """Name the calling thread for the operating system (Linux; nothing elsewhere).
    Python names threads for itself only."""
    comm = f"/proc/self/task/{threading.get_native_id()}/comm"
    with contextlib.suppress(OSError), open(comm, "w") as fh:
        fh.write(name[:15])  # the kernel keeps 15 bytes
