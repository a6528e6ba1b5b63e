"""A throwaway PostgreSQL server (initdb + pg_ctl on a free port) for tests, benchmarks and the cluster harness."""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.system.privatefiles import write_private
from harness.system.procs import free_port


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program (initdb, pg_ctl) from PATH or Debian's versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, password-authenticated, on 127.0.0.1 only.

    PostgreSQL refuses to run as root: as root the cluster is made and run as the `postgres`
    user, which then owns the directory.
    """

    def __init__(self, work: Path | None = None) -> None:
        self.work = work or Path(tempfile.mkdtemp(prefix="gaia-pg-"))
        self.data = self.work / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.user = "gaia"
        self._as_owner: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/gaia"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_owner, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> "PostgresServer":
        """initdb, start, create the `gaia` database; returns self once it accepts connections."""
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) are not installed")
        pwfile = self.work / "pwfile"
        write_private(pwfile, self.password + "\n")  # 0600 in a 0700 folder until initdb has read it
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.work, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(initdb, "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "-E", "UTF8", "--no-instructions")
        pwfile.unlink()
        self.start_server()
        env = {**os.environ, "PGPASSWORD": self.password}
        psql = pg_bin("psql") or "psql"
        subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres", "-q",
                        "-c", "CREATE DATABASE gaia"], check=True, env=env, capture_output=True, timeout=60)
        return self

    def start_server(self) -> None:
        """pg_ctl start on the existing data directory; returns once it accepts connections."""
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -k {self.work} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.work / "postgres.log"), "-w", "start")

    def stop_server(self, mode: str = "fast") -> None:
        """pg_ctl stop (`fast`: roll back open transactions, cut every connection), keeping the data."""
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    async def database(self, name: str) -> str:
        """Create an empty database on this server; its URL."""
        import asyncpg
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl and (self.data / "postmaster.pid").exists():
            subprocess.run([*self._as_owner, pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.work, ignore_errors=True)
