"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temporary directory,
served on a unix socket there and a free local port, stopped at the end.

PostgreSQL refuses to run as root; as root the cluster belongs to the ``postgres``
user (Debian's package creates it) and its commands run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ports import free_port

__all__ = ["PASSWORD_ROLE", "PgServer", "pg_bindir", "running_server"]

#: a role the cluster only lets in with its password (see PgServer.start)
PASSWORD_ROLE = "lnflow_pw"


def pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl (PATH first, then Debian's layout), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    return None


class PgServer:
    """A running cluster: ``url(db)`` for SQLAlchemy, ``create_db()`` for a fresh one."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = "lnflow_test"
        self._as: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            self._owner = (pw.pw_uid, pw.pw_gid)
        self._count = 0

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, check=False, cwd=self.root
        )
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr or out.stdout}")

    def start(self) -> None:
        if self._owner is not None:
            os.chown(self.root, *self._owner)
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", self.user,
            "--auth=trust",
            "--no-sync",
            "-E", "UTF8",
            "--locale=C",
        )  # fmt: skip
        # a role that must give its password (scram), for the refused-password path;
        # every other role is trusted on this throwaway cluster
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        opts = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        for attempt in range(3):  # another process may take the free port first
            try:
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
                    "-l", str(self.root / "server.log"), "-w", "start",
                )  # fmt: skip
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = free_port()
                opts = opts.replace(opts.split()[1], f"port={self.port}", 1)

    def restart(self) -> None:
        """Stop the server (its sessions dropped, as by an upgrade or a host reboot) and
        start it again on the same port with the same options."""
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
            "-l", str(self.root / "server.log"), "-w", "restart",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def url(self, db: str = "postgres", user: str | None = None, password: str = "") -> str:
        auth = (user or self.user) + (f":{password}" if password else "")
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str, db: str = "postgres") -> None:
        """Run ``sql`` as the cluster's superuser (autocommit: CREATE DATABASE)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=db, autocommit=True
        ) as conn:
            conn.execute(sql.encode())

    def create_db(self, template: str = "template0") -> str:
        """A new database's URL: a copy of ``template`` (empty by default)."""
        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def drop_db(self, url: str) -> None:
        """Drop the database of ``url`` (its connections closed first)."""
        self.admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@contextlib.contextmanager
def running_server() -> Iterator[PgServer | None]:
    """A started cluster for the session, or None when PostgreSQL is not installed."""
    bindir = pg_bindir()
    if bindir is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="lnflow-pg-"))
    server = PgServer(bindir, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
