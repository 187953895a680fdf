"""A Postgres cluster of a test's own: initdb into a temporary directory, started on a
free port, stopped the way a crash stops it (``pg_ctl stop -m immediate``) and started
again on the same port and data. The shared server is never touched.

    with PostgresCluster.started() as cluster:
        url = cluster.url            # postgresql+asyncpg://postgres@127.0.0.1:PORT/gateway
        cluster.stop_immediately()   # every connection dies, new ones are refused
        cluster.start()              # same data, same port

The cluster is stopped and its directory removed however the block ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.served import free_port

BIN = Path(os.environ.get("GATEWAY_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "gateway"
# Postgres refuses to run as root: a root test run runs the cluster as this user.
SERVER_USER = "postgres"


class PostgresCluster:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self._log = directory / "postgres.log"

    @classmethod
    @contextmanager
    def started(cls) -> Iterator[PostgresCluster]:
        """A new cluster with an empty ``gateway`` database, running until the block ends."""
        if not (BIN / "initdb").exists():
            raise RuntimeError(f"no Postgres binaries in {BIN} (GATEWAY_TEST_POSTGRES_BIN)")
        directory = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        cluster = cls(directory, free_port())
        try:
            cluster._initdb()
            cluster.start()
            cluster._run(BIN / "createdb", "-h", "127.0.0.1", "-p", str(cluster.port), DATABASE)
            yield cluster
        finally:
            cluster.stop_immediately()
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _initdb(self) -> None:
        self._run(
            BIN / "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        """Start (or restart) on the same port and data; returns once it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            BIN / "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
            "-l", str(self._log), "-o", options,
        )  # fmt: skip

    def stop_immediately(self) -> None:
        """As a crash would: no checkpoint, every client connection cut."""
        if (self.data / "postmaster.pid").exists():
            self._run(BIN / "pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))

    def _run(self, *argv: object) -> None:
        env = {**os.environ, "PGDATABASE": DATABASE, "PGUSER": "postgres"}
        command = [str(a) for a in argv]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=120, cwd=self.directory
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(str(argv[0])).name} failed: {done.stderr.strip()[-2000:]}")
