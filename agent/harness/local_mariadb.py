"""A throwaway `mariadbd` on loopback: temporary data directory, free port, binlog on.

Used by `binkeeper demo`, the tests and the benchmarks. Readiness is polled with a deadline
(never a blind sleep); if the server dies while starting, the error carries the tail of its
error log. Processes are killed on exit, whatever happens.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

import pymysql

from agent.harness import processes
from agent.harness.ports import free_port
from agent.mariadb.binaries import MariaDBError, find_binary

_LIVE: weakref.WeakSet[LocalMariaDB] = weakref.WeakSet()


class LocalMariaDB:
    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        server_id: int = 1,
        semi_sync: bool = False,
        log_bin_compress: bool = False,
        sync_binlog: bool = True,
        extra_args: list[str] | None = None,
    ) -> None:
        self._own_dir = base_dir is None
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="binkeeper-mariadb-"))
        self.datadir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.error_log = self.base / "error.log"
        self.server_id = server_id
        self.semi_sync = semi_sync
        self.log_bin_compress = log_bin_compress
        self.sync_binlog = sync_binlog
        self.extra_args = list(extra_args or [])
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalMariaDB:
        if not (self.datadir / "mysql").is_dir():
            self._install_db()
        for _attempt in range(3):
            self.port = free_port()
            try:
                self._launch(timeout)
                return self
            except MariaDBError as exc:
                if "Address already in use" not in str(exc):
                    raise
        raise MariaDBError("could not bind a free port after 3 attempts")

    @property
    def tmpdir(self) -> Path:
        """Its own temporary directory: servers sharing /tmp have been seen to delete each
        other's temporary tables while installing (Errcode 2 on #sql-temptable-…)."""
        return self.base / "tmp"

    def _install_db(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        command = [
            find_binary("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--tmpdir={self.tmpdir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise MariaDBError(f"mariadb-install-db failed:\n{result.stdout}\n{result.stderr}")

    def server_args(self) -> list[str]:
        args = [
            find_binary("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--tmpdir={self.tmpdir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--server-id={self.server_id}",
            f"--log-bin={self.datadir / 'bin'}",
            "--binlog-format=ROW",
            "--binlog-checksum=CRC32",
            f"--log-error={self.error_log}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=64M",
            "--performance-schema=OFF",
            "--max-connections=500",
            f"--sync-binlog={1 if self.sync_binlog else 0}",
            f"--innodb-flush-log-at-trx-commit={1 if self.sync_binlog else 2}",
            "--gtid-strict-mode=ON",
            "--log-slave-updates=ON",  # every server of a group, as DESIGN.md asks
        ]
        if os.geteuid() == 0:
            args.append("--user=root")
        if self.semi_sync:
            args += [
                "--rpl-semi-sync-master-enabled=ON",
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
                "--rpl-semi-sync-master-wait-no-slave=ON",
                "--rpl-semi-sync-master-timeout=4294967295",
            ]
        if self.log_bin_compress:
            args += ["--log-bin-compress=ON", "--log-bin-compress-min-len=10"]
        return args + self.extra_args

    def _launch(self, timeout: float) -> None:
        log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        self.process = subprocess.Popen(
            self.server_args(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise MariaDBError(
                    f"mariadbd exited with {self.process.returncode} while starting:\n"
                    + self._error_tail(log_offset)
                )
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise MariaDBError(
                        f"mariadbd not ready after {timeout}s:\n" + self._error_tail(log_offset)
                    ) from None
                time.sleep(0.05)

    def _error_tail(self, offset: int = 0, lines: int = 30) -> str:
        try:
            with self.error_log.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no error log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM), then SIGKILL if it takes longer than TIMEOUT."""
        processes.terminate(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, for durability tests."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self._launch(timeout)

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> LocalMariaDB:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # ---- use ----------------------------------------------------------------------------------

    def connect(self, database: str | None = None, **kwargs: Any) -> pymysql.Connection:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user="root",
            password="",
            database=database,
            connect_timeout=5,
            autocommit=True,
            **kwargs,
        )

    def execute(self, *statements: str, database: str | None = None,
                **kwargs: Any) -> None:
        """STATEMENTS in order on one connection (a session's own state, e.g. XA, holds)."""
        conn = self.connect(database, **kwargs)
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args or None)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def slave_status(self) -> dict[str, Any]:
        """SHOW SLAVE STATUS as a dict (empty when no replication is configured)."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW SLAVE STATUS")
                row = cursor.fetchone()
                names = [d[0] for d in cursor.description or ()]
        finally:
            conn.close()
        return dict(zip(names, row or (), strict=False))

    def variable(self, name: str) -> str:
        rows = self.query("SELECT @@GLOBAL." + name)
        return str(rows[0][0])

    def binlog_files(self) -> list[Path]:
        index = self.datadir / "bin.index"
        if not index.exists():
            return []
        names = [line.strip() for line in index.read_text().splitlines() if line.strip()]
        return [self.datadir / Path(name).name for name in names]


@atexit.register
def _kill_all() -> None:
    for server in list(_LIVE):
        server.kill()
