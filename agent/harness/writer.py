"""A Jepsen-style writer that follows the primary, and a prober that finds the first write
a new primary takes.

Each transaction writes one unique id (never reused, not even after an unknown outcome),
and the history keeps what the client was told: acknowledged (with the monotonic time of
the ack and the server that gave it), failed (the server refused; the transaction was
rolled back), unknown (the connection died mid-transaction: it may or may not stand).
The writer asks the agents where the primary is (GET /v1/status `primary`, what `binkeeper
primary` prints) and goes there again after any error. Clients write only where the agents
say: a server being promoted is writable a moment before the agents name it ready.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pymysql

POLL = 0.02  # seconds between two looks for the primary while there is none

Address = tuple[str, int]
Transaction = Callable[[Any, int], None]  # (cursor, unique id): one transaction, committed
Connect = Callable[[Address], pymysql.Connection]


def insert_ledger(cursor: Any, txn_id: int) -> None:
    """One INSERT per transaction (autocommit), into the default schema's ledger."""
    cursor.execute("INSERT INTO w.ledger (id) VALUES (%s)", (txn_id,))


class Ack(NamedTuple):
    at: float  # time.monotonic() when the commit returned
    server: Address


@dataclass
class History:
    acked: dict[int, Ack] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, txn_id: int, server: Address) -> float:
        at = time.monotonic()
        with self.lock:
            self.acked[txn_id] = Ack(at, server)
        return at

    def record(self, txn_id: int, outcome: str) -> None:
        with self.lock:
            (self.failed if outcome == "failed" else self.unknown).add(txn_id)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def acked_on(self, server: Address, after: float) -> int:
        """Commits SERVER acknowledged after time AFTER."""
        with self.lock:
            return sum(1 for ack in self.acked.values() if ack.server == server and ack.at > after)

    def first_ack(self, after: float, server: Address | None = None) -> float | None:
        """The time of the first commit acknowledged after AFTER (by SERVER, if given)."""
        with self.lock:
            times = [a.at for a in self.acked.values()
                     if a.at > after and (server is None or a.server == server)]
        return min(times) if times else None


def outcome_of(exc: pymysql.err.MySQLError) -> str:
    """'unknown' when the commit may have happened (the connection or the server went away,
    a timeout), 'failed' when the server refused a statement (e.g. read-only: not the
    primary) and the transaction was rolled back with the connection."""
    gone = isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError)
    return "unknown" if gone else "failed"


class Writer:
    """One writer thread: `start()`, `stop()`; the history is in `history`."""

    def __init__(self, locate: Callable[[], Address | None], connect: Connect,
                 transaction: Transaction = insert_ledger, first_id: int = 1) -> None:
        self.locate = locate
        self.connect = connect
        self.transaction = transaction
        self.history = History()
        self.server: Address | None = None  # where it writes now
        self._ids = itertools.count(first_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if not self._thread.is_alive():
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the writer did not stop within {timeout:.0f}s")

    def _run(self) -> None:
        conn: pymysql.Connection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = self._open()
                if conn is None:
                    self._stop.wait(POLL)
                    continue
            assert self.server is not None
            txn_id = next(self._ids)
            try:
                with conn.cursor() as cursor:
                    self.transaction(cursor, txn_id)
            except pymysql.err.MySQLError as exc:
                self.history.record(txn_id, outcome_of(exc))
                conn.close()  # rolls back what did not commit; ask for the primary again
                conn, self.server = None, None
                continue
            self.history.ack(txn_id, self.server)
        if conn is not None:
            conn.close()

    def _open(self) -> pymysql.Connection | None:
        where = self.locate()
        if where is None:
            return None
        try:
            conn = self.connect(where)
        except pymysql.err.MySQLError:
            return None  # not up (yet): ask again
        self.server = where
        return conn


def first_write(locate: Callable[[], Address | None], old: Address, connect: Connect,
                transaction: Transaction, ids: Iterable[int], history: History,
                timeout: float) -> tuple[float, Address]:
    """Once the agents name a primary other than OLD, write to it until it takes a write
    (its first commits wait for the agents' ACK): (monotonic time of the ack, the server).
    A client that follows `binkeeper primary`, asking as often as it can. Every attempt is
    recorded in HISTORY under an id from IDS. TimeoutError after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    id_source = iter(ids)
    while time.monotonic() < deadline:
        where = locate()
        if where is None or where == old:
            time.sleep(POLL / 2)  # no new primary named yet: ask again shortly
            continue
        try:
            conn = connect(where)
        except pymysql.err.MySQLError:
            time.sleep(POLL / 2)  # named but not answering yet: try again shortly
            continue
        txn_id = next(id_source)
        try:
            with conn.cursor() as cursor:
                transaction(cursor, txn_id)
        except pymysql.err.MySQLError as exc:
            history.record(txn_id, outcome_of(exc))
            time.sleep(POLL / 2)
            continue
        finally:
            conn.close()
        return history.ack(txn_id, where), where
    raise TimeoutError(f"no new primary took a write within {timeout:.0f}s")
