from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.harness.local_mariadb import LocalMariaDB


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[LocalMariaDB]:
    """A throwaway mariadbd: ROW binlog with CRC32, on a free loopback port."""
    server = LocalMariaDB(tmp_path / "mariadb")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
