"""Guards around the store: one daemon per store file (per node on a server), and the
file staying the same file.

:func:`guard_for` picks the daemon's guard for where the store lives:
:class:`FileGuard` (a SQLite file: the two guards below) or :class:`ServerGuard` (a
PostgreSQL database: a per-node advisory lock; a server has no file to lose).

* :class:`StoreLock` — an exclusive ``flock`` on ``<db>.lock`` (which holds the owner's
  pid), taken before anything is written: a second ``lnflowd`` on the same store stops
  with one line naming the first one's pid. Readers (``lnflowctl``) never take it.
  The lock goes with the process (crash or kill included); the file stays.
* :class:`StoreIdentity` — the store's (device, inode) when it was opened. A store
  deleted, moved away or replaced by another file while the daemon runs would
  otherwise go unnoticed (the daemon keeps writing into the unlinked file) or mix our
  WAL into the other file. :meth:`StoreIdentity.check` runs on every heartbeat and
  before every new SQLite connection; on a mismatch the daemon stops at once
  (:func:`stop_now`) without another write: the file at the path is not ours, and the
  original may be gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import Any, Protocol

import structlog
from sqlalchemy import Engine, event

from lnflow.errors import StoreError
from lnflow.store.db import make_private_dir
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.writer import NodeTakenError

__all__ = [
    "FileGuard",
    "ServerGuard",
    "StoreGuard",
    "StoreIdentity",
    "StoreLock",
    "StoreMovedError",
    "guard_for",
    "stop_now",
]

log = structlog.get_logger("lnflowd")

EXIT_STORE_MOVED = StoreError.exit_code


class StoreMovedError(StoreError):
    """The store file at the path is no longer the one the daemon opened."""


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class StoreLock:
    """Exclusive, non-blocking lock for the daemon's lifetime (``release`` or exit)."""

    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._db = db
        self._fd: int | None = None
        self._created = False  # this process made the lock file

    def acquire(self) -> StoreLock:
        try:
            make_private_dir(self.path.parent)  # 0700 whatever the umask, as the store's
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                self._created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store at {self._db} ({exc.strerror}): "
                "pass --db with a writable path"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            who = f"pid {owner}" if owner else "pid unknown"
            raise StoreError(
                f"another lnflowd ({who}) is recording into {self._db}: stop it first "
                "(one daemon per store), or pass --db with another store"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock; with ``remove``, also the lock file if this process made it (the
        store was refused: nothing of lnflow's is left beside another program's file)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove and self._created:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(fd)  # closing the descriptor drops the lock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class StoreIdentity:
    """The store file as opened; :meth:`check` raises :class:`StoreMovedError` once the
    path names another file or none. Holds the original open (read-only) to say where
    it went."""

    def __init__(self, db: Path) -> None:
        self.path = db
        self._fd = os.open(db, os.O_RDONLY)
        st = os.fstat(self._fd)
        self._id = (st.st_dev, st.st_ino)

    def check(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreMovedError(self._message(None)) from None
        if (st.st_dev, st.st_ino) != self._id:
            raise StoreMovedError(self._message((st.st_dev, st.st_ino)))

    def _message(self, now: tuple[int, int] | None) -> str:
        where = self._original_now()
        if now is None:
            what = "deleted" if where is None else f"moved to {where}"
        else:
            original = "deleted" if where is None else f"now at {where}"
            what = (
                f"replaced by another file (inode {now[1]}, was {self._id[1]}; ours is {original})"
            )
        return (
            f"the store {self.path} was {what} while lnflowd was recording: stopped at once; "
            "nothing was written at the path, the events received since the last write (at "
            "most about a second) were not stored; put the store back, or restart lnflowd "
            "to start a new one"
        )

    def _original_now(self) -> str | None:
        """Where the file we opened is now (Linux /proc); None once it is unlinked."""
        try:
            target = os.readlink(f"/proc/self/fd/{self._fd}")
        except OSError:
            return None
        return None if target.endswith(" (deleted)") else target

    def detach_wal(self) -> None:
        """Move our WAL next to the store where it went, or remove it with the store.

        Only files this process holds open are touched (another store's WAL at the
        path is not ours); SQLite rebuilds ``-shm`` from the WAL on the next open.
        """
        ours = _open_inodes()
        where = self._original_now()
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            try:
                st = os.stat(side)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in ours:
                continue
            beside = Path(where + suffix) if where is not None else None
            if suffix == "-wal" and beside is not None and not beside.exists():
                os.rename(side, beside)
            else:
                os.unlink(side)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _open_inodes() -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            st = os.fstat(int(fd))
            found.add((st.st_dev, st.st_ino))
    return found


def stop_now(exc: StoreMovedError, identity: StoreIdentity) -> None:
    """Exit at once with one line: no flush, no session end, no new connection.

    Every write path would go through SQLite connections whose file is no longer the
    store (or, for a new connection, into a file that is not ours). Our ``-wal`` and
    ``-shm`` files at the path go with the store (:meth:`StoreIdentity.detach_wal`):
    left there they would be read as part of whatever file is put at the path next.
    The reader child dies with us (PR_SET_PDEATHSIG).
    """
    log.error("store_moved", error=str(exc))
    with contextlib.suppress(OSError):
        identity.detach_wal()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.write(f"lnflowd: error: {exc}\n")
        sys.stderr.flush()
    os._exit(EXIT_STORE_MOVED)


class StoreGuard(Protocol):
    """What the daemon holds on the store for its lifetime."""

    #: the store has this daemon alone (a SQLite file's lock): daemon rows that look
    #: live are crashed daemons' (:class:`lnflow.store.writer.StoreWriter`)
    exclusive: bool

    def opened(self, engine: Engine) -> None:
        """The store is open: watch it from now on."""

    def check(self) -> None:
        """On every heartbeat: stop at once if the store is no longer ours."""

    def claim(self, engine: Engine, node_id: int, describe: str) -> None:
        """Take the node for this daemon; :class:`NodeTakenError` while another has it."""

    def release(self, *, refused: bool = False) -> None:
        """Let go (``refused``: the store was never used)."""


class FileGuard:
    """A SQLite file: its lock (taken at once, before anything is written) and, once
    open, its identity checked on every heartbeat and every new connection."""

    exclusive = True

    def __init__(self, db: Path) -> None:
        self._db = db
        self._lock = StoreLock(db).acquire()
        self._identity: StoreIdentity | None = None

    def opened(self, engine: Engine) -> None:
        identity = self._identity = StoreIdentity(self._db)

        def check(dbapi_connection: object, connection_record: object) -> None:
            try:
                identity.check()
            except StoreMovedError as exc:
                stop_now(exc, identity)

        # a new connection must open our file, never one put in its place
        event.listen(engine, "connect", check, insert=True)

    def check(self) -> None:
        if self._identity is not None:
            try:
                self._identity.check()
            except StoreMovedError as exc:
                stop_now(exc, self._identity)

    def claim(self, engine: Engine, node_id: int, describe: str) -> None:
        return None  # the file's lock keeps every other daemon out

    def release(self, *, refused: bool = False) -> None:
        if self._identity is not None:
            self._identity.close()
        self._lock.release(remove=refused)


class ServerGuard:
    """A PostgreSQL database: daemons of different nodes write it at once; each holds
    its node's advisory lock (:class:`lnflow.store.engines.postgresql.NodeLock`), so a
    second daemon of the same node is refused even when both start together."""

    exclusive = False

    def __init__(self, url: DbUrl) -> None:
        self._url = url
        self._lock: Any = None
        self._claimed: tuple[Engine, int, str] | None = None

    def opened(self, engine: Engine) -> None:
        return None

    def check(self) -> None:
        """The lock goes with its session (a server restart, a terminated backend, a
        lost network): take it again as soon as the server answers. Another daemon
        of the node that took it meanwhile keeps it, and this one stops at once."""
        if self._claimed is None or (self._lock is not None and self._lock.held()):
            return
        from lnflow.store.engines.postgresql import NodeLock, reason_of

        engine, node_id, describe = self._claimed
        if self._lock is not None:
            self._lock.release()
            self._lock = None
            log.warning("node_lock_lost", node=describe, store=str(self._url))
        try:
            lock = NodeLock.try_take(engine, node_id)
        except Exception as exc:  # the server is away: the next heartbeat retries
            log.warning("node_lock_not_taken", error=reason_of(exc, self._url))
            return
        if lock is None:
            stop_taken(
                f"another lnflowd took node {describe} in {self._url} while this one had"
                " lost its connection: this one stops (one daemon per node)"
            )
        self._lock = lock
        log.info("node_lock_taken_again", node=describe)

    def claim(self, engine: Engine, node_id: int, describe: str) -> None:
        from lnflow.store.engines.postgresql import NodeLock

        lock = NodeLock.try_take(engine, node_id)
        if lock is None:
            raise NodeTakenError(
                f"another lnflowd is recording node {describe} into {self._url}: stop it"
                " first (one daemon per node; daemons of other nodes may share the store)"
            )
        self._lock = lock
        self._claimed = (engine, node_id, describe)

    def release(self, *, refused: bool = False) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


def stop_taken(message: str) -> None:
    """Exit at once with one line: another daemon records the node now, and two would
    write its sessions and daemon row over each other."""
    log.error("node_taken", error=message)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.write(f"lnflowd: error: {message}\n")
        sys.stderr.flush()
    os._exit(NodeTakenError.exit_code)


def guard_for(where: StoreLocation) -> StoreGuard:
    """The daemon's guard on the store at ``where``, taken now (a file's lock first)."""
    if isinstance(where, DbUrl):
        return ServerGuard(where)
    return FileGuard(where)
