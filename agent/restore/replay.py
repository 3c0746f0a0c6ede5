"""Replay restored binlog files into a MariaDB server: `mariadb-binlog FILES | mariadb`."""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from agent.mariadb.binaries import find_binary
from agent.restore.fetch import RestoreError


@dataclass(frozen=True)
class TargetServer:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> TargetServer:
        """mysql://USER[:PASSWORD]@HOST[:PORT]; the password may be %-encoded."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise RestoreError(f"--target: {url!r} is not mysql://USER[:PASSWORD]@HOST[:PORT]")
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise RestoreError(f"--target: {url!r} has a bad port") from exc
        if parts.path not in ("", "/"):
            raise RestoreError("--target: name no database; the binlog names its own")
        return cls(parts.hostname, port, urllib.parse.unquote(parts.username or "root"),
                   urllib.parse.unquote(parts.password or ""))


def replay_into(files: list[Path], target: TargetServer) -> None:
    """`mariadb-binlog FILES | mariadb`: the replay the binlog tools themselves define."""
    with tempfile.TemporaryFile() as decoder_errors:  # a file, so a chatty decoder never blocks
        decoder = subprocess.Popen([find_binary("mariadb-binlog"), *map(str, files)],
                                   stdout=subprocess.PIPE, stderr=decoder_errors)
        assert decoder.stdout is not None
        try:
            client = subprocess.run(
                [find_binary("mariadb"), f"--host={target.host}", f"--port={target.port}",
                 f"--user={target.user}", "--batch", "--protocol=TCP"],
                stdin=decoder.stdout, capture_output=True, text=True,
                env={**os.environ, "MYSQL_PWD": target.password})
        finally:
            decoder.stdout.close()
            decoder_status = decoder.wait()
        decoder_errors.seek(0)
        decoder_message = decoder_errors.read().decode(errors="replace").strip()
    if client.returncode != 0:
        raise RestoreError(f"replay into {target.host}:{target.port} failed "
                           f"(what was applied before the error stays): "
                           f"{client.stderr.strip()}")
    if decoder_status != 0:
        raise RestoreError(f"mariadb-binlog failed: {decoder_message}")
