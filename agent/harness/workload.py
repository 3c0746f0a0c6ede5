"""An OLTP-style writer for demos, tests and benchmarks, with a Jepsen-style history.

Every transaction inserts one unique id into `ledger` beside its other writes (inserts,
updates, deletes on tables with secondary indexes), and the history records which commits
returned OK, which failed, and which are unknown (the connection died mid-commit).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymysql

SCHEMA = [
    "CREATE DATABASE IF NOT EXISTS shop",
    """CREATE TABLE IF NOT EXISTS shop.accounts (
        id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, balance DECIMAL(14,2) NOT NULL,
        updated_at DATETIME(6) NOT NULL, KEY by_name (name), KEY by_balance (balance))""",
    """CREATE TABLE IF NOT EXISTS shop.orders (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, account_id BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL, amount DECIMAL(14,2) NOT NULL, note VARCHAR(255),
        created_at DATETIME(6) NOT NULL, KEY by_account (account_id), KEY by_status (status))""",
    """CREATE TABLE IF NOT EXISTS shop.ledger (
        id BIGINT PRIMARY KEY, writer INT NOT NULL, created_at DATETIME(6) NOT NULL,
        KEY by_writer (writer))""",
]
STATUSES = ["new", "paid", "shipped", "delivered", "cancelled"]
WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu"]


@dataclass
class History:
    acked: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, txn_id: int, outcome: str) -> None:
        with self.lock:
            getattr(self, outcome).add(txn_id)


ConnFactory = Callable[[], pymysql.Connection]


class Workload:
    def __init__(
        self, connect: ConnFactory, *, seed: int = 1, writer: int = 0, accounts: int = 1000
    ) -> None:
        self.connect = connect
        self.rng = random.Random(seed)
        self.writer = writer
        self.accounts = accounts
        self.history = History()
        self._next_id = writer << 40

    def setup(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                for statement in SCHEMA:
                    cursor.execute(statement)
                rows = [(i, f"customer-{i}", 100) for i in range(self.accounts)]
                cursor.execute("BEGIN")  # one transaction, not one per row
                cursor.executemany(
                    "INSERT IGNORE INTO shop.accounts VALUES (%s, %s, %s, NOW(6))", rows
                )
                cursor.execute("COMMIT")
        finally:
            conn.close()

    def transaction(self, cursor: Any, txn_id: int) -> None:
        rng = self.rng
        account = rng.randrange(self.accounts)
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO shop.ledger VALUES (%s, %s, NOW(6))", (txn_id, self.writer))
        kind = rng.random()
        if kind < 0.5:
            cursor.execute(
                "INSERT INTO shop.orders (account_id, status, amount, note, created_at) "
                "VALUES (%s, 'new', %s, %s, NOW(6))",
                (account, rng.randrange(1, 50000) / 100, " ".join(rng.choices(WORDS, k=6))),
            )
            cursor.execute(
                "UPDATE shop.accounts SET balance = balance - 1, updated_at = NOW(6) WHERE id = %s",
                (account,),
            )
        elif kind < 0.85:
            cursor.execute(
                "UPDATE shop.orders SET status = %s WHERE account_id = %s LIMIT 3",
                (rng.choice(STATUSES), account),
            )
            cursor.execute(
                "UPDATE shop.accounts SET balance = balance + 1, "
                "name = %s, updated_at = NOW(6) WHERE id = %s",
                (f"customer-{account}-{rng.choice(WORDS)}", account),
            )
        else:
            cursor.execute(
                "DELETE FROM shop.orders WHERE account_id = %s AND status = 'cancelled' LIMIT 2",
                (account,),
            )
        cursor.execute("COMMIT")

    def _reconnect(self, stop: threading.Event | None) -> pymysql.Connection | None:
        """A new connection once the server answers again (None if told to stop first)."""
        delay = 0.05
        while stop is None or not stop.is_set():
            try:
                return self.connect()
            except pymysql.err.OperationalError:
                time.sleep(delay)  # the server is restarting: retry with backoff
                delay = min(1.0, delay * 2)
        return None

    def run(
        self,
        transactions: int,
        on_commit: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> History:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                for _ in range(transactions):
                    if stop is not None and stop.is_set():
                        break
                    self._next_id += 1
                    txn_id = self._next_id
                    try:
                        self.transaction(cursor, txn_id)
                    except pymysql.err.OperationalError:
                        # The connection died mid-transaction: the commit may or may not stand.
                        self.history.record(txn_id, "unknown")
                        conn.close()
                        reconnected = self._reconnect(stop)
                        if reconnected is None:
                            return self.history
                        conn = reconnected
                        cursor = conn.cursor()
                        continue
                    except pymysql.err.MySQLError:
                        self.history.record(txn_id, "failed")
                        continue
                    self.history.record(txn_id, "acked")
                    if on_commit is not None:
                        on_commit(txn_id)
        finally:
            conn.close()
        return self.history
