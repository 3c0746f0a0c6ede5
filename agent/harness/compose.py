"""The clients of the docker-compose demo (docker/docker-compose.yml), run in the agent image
as `python -m agent.harness.compose COMMAND`:

- `schema`: once the agents name a primary, the OLTP schema and the application user on it,
  as root — replicated to every server through the agents;
- `write`: the OLTP writer, logged in as the application user (no READ_ONLY ADMIN), writing
  wherever the agents say the primary is; it prints what was acknowledged and keeps every
  outcome in its log (`WRITER_LOG`): acknowledged, refused, unknown;
- `target`: the primary to kill (HOST:PORT; HOST is its compose service), once a replica
  can take over and the writer has commits acknowledged (docker/failover.sh);
- `failover --killed HOST:PORT --killed-at TIME`: after the kill, the failover as the agents
  and the writer saw it, with timings, and the verdict: every acknowledged commit on the new
  primary, no refused one, the other replica caught up with no errant GTID. Exit 0 only when
  it passes; the last line is `RESULT {json}` for scripts.

The agents are asked over HTTPS, GET /v1/status with a read-scope token: the environment
names them (BINKEEPER_AGENTS, comma-separated URLs), the group's CA (BINKEEPER_CA) and the
token's file (BINKEEPER_TOKEN_FILE, re-read at each question: `docker compose up` mints a
new one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import signal
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pymysql

import walstore
from agent.harness import processes
from agent.harness.verdict import errant_gtids
from agent.harness.workload import SCHEMA, Workload
from agent.harness.writer import Address, History, Writer

T = TypeVar("T")

POLL = 0.05  # seconds between two looks at the agents or the log
PROGRESS_EVERY = 2.0  # seconds between two lines of the writer
MORE_AFTER_FAILOVER = 100  # commits on the new primary before the verdict
DATABASE = "shop"
LEDGER = "shop.ledger"


class DemoError(RuntimeError):
    """What the demo waited for did not happen; the message says what."""


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise DemoError(f"set {name} in the environment (docker-compose.yml does)")
    return value


# ---- the agents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Agents:
    urls: tuple[str, ...]
    ca_file: str | None
    token_file: str | None

    @classmethod
    def from_env(cls) -> Agents:
        urls = tuple(u.strip() for u in env("BINKEEPER_AGENTS").split(",") if u.strip())
        return cls(urls, os.environ.get("BINKEEPER_CA"), os.environ.get("BINKEEPER_TOKEN_FILE"))

    def token(self) -> str | None:
        if not self.token_file:
            return None
        try:
            return Path(self.token_file).read_text().strip() or None
        except OSError:
            return None

    @functools.cached_property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def status(self, url: str, timeout: float = 1.0) -> dict[str, Any]:
        """GET URL/v1/status with the token, HTTPS verified against the CA (host name
        included)."""
        request = urllib.request.Request(url.rstrip("/") + "/v1/status")
        token = self.token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        context = self.tls if url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def timeline(self, url: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """URL's status of its one timeline, or None while it cannot answer."""
        try:
            status = self.status(url, timeout)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        timelines = status.get("timelines") or []
        return dict(timelines[0]) if timelines else None

    def timelines(self) -> dict[str, dict[str, Any] | None]:
        return {url: self.timeline(url) for url in self.urls}

    def primary(self) -> Address | None:
        """HOST, PORT of the ready primary as the first agent that answers says (what
        `binkeeper primary` prints); None while there is none."""
        for url in self.urls:
            timeline = self.timeline(url, timeout=0.5)
            if timeline is None:
                continue
            shown = timeline.get("primary")
            return (str(shown["host"]), int(shown["port"])) if shown else None
        return None

    def leader_timeline(self) -> dict[str, Any] | None:
        for timeline in self.timelines().values():
            if timeline is not None and timeline.get("role") == "leader":
                return timeline
        return None

    def waiting(self) -> str:
        """Why no primary is named yet, as the leader says."""
        timeline = self.leader_timeline()
        if timeline is None:
            return "no agent leads yet"
        failover = timeline.get("failover") or {}
        return str(failover.get("waiting") or failover.get("problems") or "-")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             poll: float = POLL) -> T:
    return processes.wait_for(predicate, timeout, what, poll, DemoError)


def connect(address: Address, user: str, password: str,
            timeout: float = 30.0) -> pymysql.Connection:
    return pymysql.connect(host=address[0], port=address[1], user=user, password=password,
                           autocommit=True, connect_timeout=2, read_timeout=timeout,
                           write_timeout=timeout)


def app_connect(address: Address) -> pymysql.Connection:
    return connect(address, env("APP_USER", "app"), env("APP_PASSWORD"))


def show(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


# ---- schema -------------------------------------------------------------------------------


def schema(agents: Agents, timeout: float) -> int:
    """The OLTP schema, its accounts and the application user, on the primary the agents
    name; every server gets them by replication. Idempotent (a second `up` changes nothing)."""
    user, password = env("APP_USER", "app"), env("APP_PASSWORD")
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        where = agents.primary()
        if where is not None:
            try:
                setup(where, user, password)
            except pymysql.err.MySQLError as exc:
                last = f"{show(where)}: {exc}"
            else:
                print(f"schema: {DATABASE} and user '{user}' (SELECT, INSERT, UPDATE, DELETE on "
                      f"{DATABASE}.*) on the primary {show(where)}", flush=True)
                return 0
        else:
            last = f"no primary named yet ({agents.waiting()})"
        if time.monotonic() > deadline:
            print(f"schema: gave up after {timeout:.0f}s: {last}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def setup(where: Address, user: str, password: str) -> None:
    conn = connect(where, "root", env("MARIADB_ROOT_PASSWORD"))
    try:
        with conn.cursor() as cursor:
            for statement in SCHEMA:
                cursor.execute(statement)
            cursor.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s",
                           (user, password))
            cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {DATABASE}.* TO %s@'%%'",
                           (user,))
    finally:
        conn.close()
    # The accounts, in one transaction (Workload.setup repeats the schema: IF NOT EXISTS).
    Workload(lambda: connect(where, "root", env("MARIADB_ROOT_PASSWORD"))).setup()


# ---- the writer and its log ---------------------------------------------------------------


class LoggedHistory(History):
    """The writer's history kept in a file rather than in memory (the demo may run for
    hours), one line per outcome: `A|F|U ID HOST:PORT UNIX_TIME` (acknowledged; failed:
    refused and rolled back; unknown: the connection died mid-commit). Counts stay here."""

    def __init__(self, path: Path, server: Callable[[], Address | None]) -> None:
        """SERVER: where the writer writes now (a refused or unknown commit was sent there)."""
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)
        self._server = server
        self.counts = {"A": 0, "F": 0, "U": 0}

    def ack(self, txn_id: int, server: Address) -> float:
        self._write("A", txn_id, server)
        return time.monotonic()

    def record(self, txn_id: int, outcome: str) -> None:
        self._write("F" if outcome == "failed" else "U", txn_id, self._server())

    def _write(self, kind: str, txn_id: int, server: Address | None) -> None:
        where = show(server) if server is not None else "-"
        with self.lock:
            self._file.write(f"{kind} {txn_id} {where} {time.time():.6f}\n")
            self.counts[kind] += 1

    def close(self) -> None:
        self._file.close()


@dataclass
class Outcomes:
    """What the writer's log says: acknowledged ids (with server and time), refused, unknown.
    `refresh()` reads what was appended since the last call."""

    path: Path
    acked: dict[int, tuple[str, float]] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    _offset: int = 0

    def refresh(self) -> Outcomes:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return self
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():
                continue
            kind, txn_id, server, at = parts[0], int(parts[1]), sys.intern(parts[2]), parts[3]
            if kind == "A":
                self.acked[txn_id] = (server, float(at))
            elif kind == "F":
                self.failed.add(txn_id)
            elif kind == "U":
                self.unknown.add(txn_id)
        return self

    def first_ack(self, server: str, after: float) -> float | None:
        times = [at for where, at in self.acked.values() if where == server and at > after]
        return min(times) if times else None

    def count_on(self, server: str, after: float = 0.0) -> int:
        return sum(1 for where, at in self.acked.values() if where == server and at > after)


def writer_log() -> Path:
    return Path(env("WRITER_LOG", "/var/lib/binkeeper/writer/outcomes.log"))


def write(agents: Agents) -> int:
    """Write until SIGTERM, a line of progress every PROGRESS_EVERY seconds."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Only its transactions are used: the schema and accounts come from `schema`.
    workload = Workload(lambda: app_connect(("", 0)), seed=os.getpid())
    # Unique ids across restarts of the writer: microseconds since the epoch at its start
    # (it commits far fewer than a million transactions a second).
    writer = Writer(agents.primary, app_connect, transaction=workload.transaction,
                    first_id=time.time_ns() // 1000)
    history = LoggedHistory(writer_log(), lambda: writer.server)
    writer.history = history
    print(f"writer: OLTP transactions as user '{env('APP_USER', 'app')}' to the primary the "
          f"agents name ({', '.join(agents.urls)}); outcomes in {writer_log()}", flush=True)
    writer.start()
    last_count, last_at, last_server = 0, time.monotonic(), None
    try:
        while not stop.wait(PROGRESS_EVERY):
            with history.lock:
                count, failed, unknown = (history.counts[k] for k in "AFU")
            now = time.monotonic()
            server = show(writer.server) if writer.server is not None else "none (looking)"
            if server != last_server:
                print(f"writer: writing to {server}", flush=True)
                last_server = server
            rate = (count - last_count) / (now - last_at)
            print(f"writer: {count} commits acknowledged ({rate:.0f}/s), {unknown} unknown, "
                  f"{failed} refused; primary {server}", flush=True)
            last_count, last_at = count, now
    finally:
        writer.stop()
        history.close()
    print(f"writer: stopped after {history.counts['A']} acknowledged commits", flush=True)
    return 0


# ---- the failover story -------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def live_replicas(agents: Agents, primary: Address | None) -> list[dict[str, Any]]:
    """The servers the leader probed as live replicas (not PRIMARY)."""
    timeline = agents.leader_timeline() or {}
    where = show(primary) if primary is not None else None
    return [s for s in timeline.get("servers") or []
            if s.get("role") == "replica" and s.get("address") != where]


def target(agents: Agents, timeout: float) -> int:
    """Print the primary to kill once a replica can take over and the writer has commits
    acknowledged; exit 1 (saying why) if that does not happen within TIMEOUT."""
    outcomes = Outcomes(writer_log())

    def ready() -> Address | None:
        where = agents.primary()
        if where is None or not live_replicas(agents, where):
            return None
        return where if outcomes.refresh().acked else None

    try:
        where = wait_for(ready, timeout, "a primary, a live replica and the writer's first "
                         "acknowledged commit", poll=0.2)
    except DemoError as exc:
        now = agents.primary()
        servers = ((agents.leader_timeline() or {}).get("servers") or [])
        roles = ", ".join(f"{s.get('address')} {s.get('role')}" for s in servers) or "none"
        print(f"failover: {exc}; primary {show(now) if now else 'none'}, servers: {roles}."
              " Is a killed server still down? Start it again (docker compose start dbN) and "
              "retry once the agents show it as a replica.", file=sys.stderr)
        return 1
    print(show(where))
    return 0


def parse_time(text: str) -> float:
    """Seconds since the epoch, from a number or from an RFC 3339 time as `docker inspect`
    prints it (nanoseconds, Z)."""
    try:
        return float(text)
    except ValueError:
        pass
    stamp = text.strip().replace("Z", "+00:00")
    head, dot, rest = stamp.partition(".")
    if dot:  # Python takes at most microseconds
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        stamp = f"{head}.{(digits + '000000')[:6]}{zone}"
    moment = dt.datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def leader_account(agents: Agents, new: Address) -> dict[str, Any] | None:
    """The leader's timings of the failover to NEW, once it recorded NEW ready."""
    def entry() -> dict[str, Any] | None:
        timeline = agents.leader_timeline() or {}
        for item in reversed((timeline.get("failover") or {}).get("failovers") or []):
            if item.get("to") == show(new) and "ready_s" in item:
                return dict(item)
        return None

    try:
        return wait_for(entry, 10, "the leader's account of the failover", poll=0.2)
    except DemoError:
        return None  # leadership moved: the new leader did not run it


def position(address: Address) -> str:
    conn = app_connect(address)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@gtid_binlog_pos")
            row = cursor.fetchone()
    finally:
        conn.close()
    return str(row[0] or "") if row else ""


def ledger_ids(address: Address) -> set[int]:
    conn = app_connect(address)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {LEDGER}")
            return {int(row[0]) for row in cursor.fetchall()}
    finally:
        conn.close()


def address_of(text: str) -> Address:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise DemoError(f"expected HOST:PORT, got {text!r}")
    return (host, int(port))


def failover(agents: Agents, killed: Address, killed_at: float) -> int:
    log = writer_log()
    outcomes = Outcomes(log)
    before = outcomes.refresh()
    acked_before = sum(1 for _, at in before.acked.values() if at <= killed_at)
    moment = dt.datetime.fromtimestamp(killed_at, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    say(f">>> {killed[0]}, the primary ({show(killed)}), killed with SIGKILL at {moment} UTC; "
        f"the writer had {acked_before} commits acknowledged")

    def new_primary() -> Address | None:
        where = agents.primary()
        return where if where is not None and where != killed else None

    new = wait_for(new_primary, 60, f"the agents to name a primary other than {show(killed)}")
    named_s = time.time() - killed_at
    say(f"The agents named {show(new)} the new primary {named_s:.2f} s after the kill")
    writable_at = wait_for(lambda: outcomes.refresh().first_ack(show(new), killed_at), 60,
                           f"the writer's first commit on {show(new)}")
    writable_s = writable_at - killed_at
    say(f"The writer's first commit on {show(new)} was acknowledged {writable_s:.2f} s after "
        "the kill: the time to a writable primary")
    account = leader_account(agents, new)
    if account is not None:
        silent, record, ready = (float(account.get(k) or 0.0)
                                 for k in ("silent_s", "record_s", "ready_s"))
        say(f"  the leader's account: primary silent {silent:.2f} s (stream and SQL probe) -> "
            f"failover recorded {record * 1000:.0f} ms later -> caught up and promoted, ready "
            f"{ready - record:.2f} s later")
    wait_for(lambda: outcomes.refresh().count_on(show(new), killed_at) >= MORE_AFTER_FAILOVER,
             60, f"{MORE_AFTER_FAILOVER} commits on {show(new)}", poll=0.2)

    # The verdict, from a snapshot of what the writer was told.
    outcomes.refresh()
    present = ledger_ids(new)
    missing = sorted(outcomes.acked.keys() - present)
    refused_present = sorted(outcomes.failed & present)
    by_killed = outcomes.count_on(show(killed))
    say("")
    say(f"The writer was told: {len(outcomes.acked)} commits acknowledged ({by_killed} by "
        f"{show(killed)}), {len(outcomes.unknown)} unknown (connection lost mid-commit), "
        f"{len(outcomes.failed)} refused.")
    say(f"On the new primary {show(new)}: {len(outcomes.acked) - len(missing)} of them present, "
        f"missing {len(missing)}{f' (first ids: {missing[:5]})' if missing else ''}; refused "
        f"but present: {len(refused_present)}.")
    target_pos = position(new)
    replicas: dict[str, str] = {}
    errant: dict[str, str] = {}
    for server in live_replicas(agents, new):
        where = address_of(str(server["address"]))
        if where == killed:
            continue

        def caught_up(where: Address = where) -> str | None:
            try:
                held = position(where)
            except pymysql.err.MySQLError:
                return None
            return held if walstore.covers(walstore.parse_position(held),
                                           walstore.parse_position(target_pos)) else None

        held = wait_for(caught_up, 60, f"{show(where)} to replicate {target_pos}", poll=0.2)
        committed = str((agents.leader_timeline() or {}).get("committed_gtid") or "")
        replicas[show(where)] = held
        wrong = errant_gtids(held, committed)
        if wrong:
            errant[show(where)] = wrong
        say(f"Replica {show(where)} (beside agent {server.get('node')}) replicated everything "
            f"the new primary held ({target_pos}); errant GTIDs: {wrong or 'none'}.")
    passed = (not missing and not refused_present and not errant and bool(replicas)
              and bool(outcomes.acked))
    if passed:
        say(f"VERDICT: PASS - every commit acknowledged before and after the SIGKILL of "
            f"{killed[0]} is on the new primary {show(new)}, nothing refused was kept, and the "
            f"other server replicates the same history; writable again {writable_s:.2f} s "
            "after the kill.")
    else:
        say("VERDICT: FAIL" + ("" if replicas else " (no live replica to check)"))
    say("RESULT " + json.dumps({
        "killed": show(killed), "new_primary": show(new), "named_s": round(named_s, 3),
        "writable_s": round(writable_s, 3), "acked": len(outcomes.acked),
        "acked_by_killed": by_killed, "unknown": len(outcomes.unknown),
        "refused": len(outcomes.failed), "missing": len(missing),
        "refused_present": len(refused_present), "replicas": replicas, "errant": errant,
        "leader": account, "passed": passed}))
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.harness.compose",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    schema_cmd = sub.add_parser("schema", help="the schema and the application user")
    schema_cmd.add_argument("--timeout", type=float, default=300.0)
    sub.add_parser("write", help="the OLTP writer that follows the primary")
    target_cmd = sub.add_parser("target", help="HOST:PORT of the primary to kill")
    target_cmd.add_argument("--timeout", type=float, default=120.0)
    failover_cmd = sub.add_parser("failover", help="the failover after the kill, the verdict")
    failover_cmd.add_argument("--killed", required=True, help="HOST:PORT of the killed primary")
    failover_cmd.add_argument("--killed-at", required=True,
                              help="when: seconds since the epoch, or RFC 3339")
    args = parser.parse_args(argv)
    try:
        agents = Agents.from_env()
        if args.command == "schema":
            return schema(agents, args.timeout)
        if args.command == "write":
            return write(agents)
        if args.command == "target":
            return target(agents, args.timeout)
        return failover(agents, address_of(args.killed), parse_time(args.killed_at))
    except DemoError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
