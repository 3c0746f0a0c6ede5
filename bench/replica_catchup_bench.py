"""Serving replicas: a fresh MariaDB replica catching up the same committed binlog from an
agent and from the primary itself, and 10 readers at once (mariadb-binlog
--read-from-remote-server), in one run on the same data."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.binlog.files import read_events
from agent.harness.local_mariadb import LocalMariaDB
from agent.mariadb.binaries import find_binary
from bench.report import markdown_table, record
from bench.semisync_bench import SEMI_SYNC_MASTER, cpu_seconds, wait_for
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, Cluster

REPO = Path(__file__).resolve().parent.parent
ROW_KIB = 512


def load(primary: LocalMariaDB, megabytes: int, writers: int = 4) -> None:
    primary.query("CREATE DATABASE IF NOT EXISTS bulk")
    primary.query("CREATE TABLE bulk.t (id INT AUTO_INCREMENT PRIMARY KEY, v LONGTEXT)")
    per_writer = max(1, megabytes * 1024 // ROW_KIB // writers)

    def write() -> None:
        conn = primary.connect()
        try:
            with conn.cursor() as cursor:
                for _ in range(per_writer):
                    cursor.execute("INSERT INTO bulk.t (v) SELECT REPEAT(SHA2(RAND(), 256), %s)",
                                   (ROW_KIB * 1024 // 64,))
                    conn.commit()
        finally:
            conn.close()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def load_small_events(primary: LocalMariaDB, transactions: int, rows: int) -> None:
    """Transactions of many small rows; with --binlog-row-event-max-size=256 each rows
    event holds a few of them, so the binlog is mostly events of ~256 bytes."""
    primary.query("CREATE TABLE bulk.small (id BIGINT PRIMARY KEY, v VARCHAR(32))")
    conn = primary.connect()
    try:
        with conn.cursor() as cursor:
            for index in range(transactions):
                cursor.execute(f"INSERT INTO bulk.small SELECT {index} * {rows} + seq, "
                               f"LEFT(SHA2(seq, 256), 32) FROM bulk.seq_1_to_{rows}")
                conn.commit()
    finally:
        conn.close()


def catch_up(root: Path, name: str, port: int, user: str, password: str,
             final_gtid: str, last_file: str, last_pos: int) -> dict[str, float]:
    with LocalMariaDB(root / name, server_id=50 + len(name) + int(time.time()) % 1000,
                      extra_args=["--max-allowed-packet=256M"]) as replica:
        started = time.perf_counter()
        replica.query(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, "
                      f"MASTER_USER='{user}', MASTER_PASSWORD='{password}', "
                      "MASTER_USE_GTID=slave_pos")
        replica.query("START SLAVE")

        def received() -> bool:
            status = replica.slave_status()
            if status.get("Last_IO_Error"):
                raise RuntimeError(str(status["Last_IO_Error"]))
            return (status.get("Master_Log_File") == last_file
                    and int(status.get("Read_Master_Log_Pos") or 0) >= last_pos)

        wait_for(received, 1800)
        receive = time.perf_counter() - started
        wait_for(lambda: replica.query("SELECT @@gtid_slave_pos")[0][0] == final_gtid, 3600)
        applied = time.perf_counter() - started
    return {"receive_s": receive, "apply_s": applied}


def readers(port: int, user: str, password: str, files: list[str], count: int,
            scratch: Path) -> float:
    """COUNT concurrent raw mariadb-binlog readers of the whole history; wall seconds.
    Their output files are symlinks to /dev/null: the disk is not what is measured."""
    procs = []
    sinks = []
    for index in range(count):
        sink = scratch / f"reader{index}"
        sink.mkdir(parents=True, exist_ok=True)
        for name in files:
            (sink / name).unlink(missing_ok=True)
            (sink / name).symlink_to("/dev/null")
        sinks.append(sink)
    started = time.perf_counter()
    for sink in sinks:
        procs.append(subprocess.Popen(
            [find_binary("mariadb-binlog"), "--read-from-remote-server", "--host=127.0.0.1",
             f"--port={port}", f"--user={user}", f"--password={password}", "--to-last-log",
             "--raw", f"--result-file={sink}/", files[0]],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(err.decode(errors="replace"))
    return time.perf_counter() - started


def measure_readers(port: int, user: str, password: str, pid: int | None, files: list[Path],
                    count: int, scratch: Path) -> tuple[float, float | None]:
    """(wall seconds, CPU seconds of process PID or None) for COUNT concurrent readers."""
    cpu_before = cpu_seconds(pid) if pid else 0.0
    wall = readers(port, user, password, [p.name for p in files], count, scratch)
    return wall, (cpu_seconds(pid) - cpu_before) if pid else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--small-transactions", type=int, default=300,
                        help="transactions of 5,000 small rows for the events/s case")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="catchup-", dir=REPO / "bench" / "out"))
    primary = LocalMariaDB(root / "primary",
                           extra_args=[*SEMI_SYNC_MASTER, "--max-allowed-packet=256M",
                                       "--binlog-row-event-max-size=256"]).start()
    cluster = Cluster(root / "agents", 3, use_proxies=False, mariadb_port=primary.port,
                      serve_replicas=True)
    try:
        cluster.start()
        wait_for(lambda: (leader := cluster.leader()) is not None and (
            (cluster.agents[leader].timeline() or {}).get("source") or {}).get("connected"), 30)
        started = time.perf_counter()
        load(primary, args.megabytes)
        load_s = time.perf_counter() - started
        wait_for(cluster.converged, 600)
        files = primary.binlog_files()
        total = sum(p.stat().st_size for p in files)
        events = sum(1 for p in files for _ in read_events(p))
        final_gtid = primary.query("SELECT @@gtid_binlog_pos")[0][0]
        last_file, last_pos = primary.query("SHOW MASTER STATUS")[0][:2]
        leader = cluster.leader()
        agent_name = next(n for n in cluster.agents if n != leader)
        agent = cluster.agents[agent_name]
        agent_port = agent.mysql_port or 0
        print(f"binlog: {total / 1e6:.0f} MB, {events} events, {len(files)} files; "
              f"loaded through the quorum in {load_s:.1f} s", flush=True)

        rows: list[list[Any]] = []
        results = {}
        sources = (
            ("primary", primary.port, "root", "", None),
            (f"agent {agent_name}", agent_port, REPLICATION_USER, REPLICATION_PASSWORD,
             agent.process.pid if agent.process else None),
        )
        for label, port, user, password, _pid in sources:
            result = catch_up(root, "replica-of-" + label.split()[0], port, user, password,
                              final_gtid, last_file, int(last_pos))
            results[label] = result
            rows.append([f"1 fresh replica from the {label}",
                         f"{total / 1e6 / result['receive_s']:.0f} MB/s "
                         f"({result['receive_s']:.1f} s)",
                         f"{result['apply_s']:.1f} s", "-"])
            print(rows[-1], flush=True)
        for label, port, user, password, pid in sources:
            wall, cpu = measure_readers(port, user, password, pid, files, args.readers,
                                        root / "readers")
            served = total * args.readers
            rows.append([f"{args.readers} mariadb-binlog readers from the {label}",
                         f"{served / 1e6 / wall:.0f} MB/s, {events * args.readers / wall:,.0f} "
                         f"events/s ({wall:.1f} s)", "-",
                         f"{cpu * 1000 / (served / 1e6):.2f} ms/MB" if cpu is not None else "-"])
            print(rows[-1], flush=True)
        # Small events: what serving costs per event rather than per byte.
        primary.query("FLUSH BINARY LOGS")
        small_from = primary.binlog_files()[-1].name
        load_small_events(primary, args.small_transactions, 5000)
        wait_for(cluster.converged, 600)
        small_files = [p for p in primary.binlog_files() if p.name >= small_from]
        small_bytes = sum(p.stat().st_size for p in small_files)
        small_events = sum(1 for p in small_files for _ in read_events(p))
        for label, port, user, password, pid in sources:
            wall, cpu = measure_readers(port, user, password, pid, small_files, args.readers,
                                        root / "readers-small")
            served = small_events * args.readers
            rows.append([f"{args.readers} mariadb-binlog readers from the {label}, "
                         f"small events", f"{small_bytes * args.readers / 1e6 / wall:.0f} MB/s, "
                         f"{served / wall:,.0f} events/s ({wall:.1f} s)", "-",
                         f"{cpu * 1e6 / served:.1f} µs/event" if cpu is not None else "-"])
            print(rows[-1], flush=True)
        first = results["primary"]["receive_s"]
        second = results[f"agent {agent_name}"]["receive_s"]
        ratio = first / second
        table = markdown_table(
            ["case", "received (binlog MB/s)", "applied by the replica",
             "agent CPU per MB (per event) served"],
            rows)
        table += (f"\n\nAgent / primary catch-up speed (receiving): {ratio:.2f} (target ≥ 0.8). "
                  f"Binlog: {total / 1e6:.0f} MB in {len(files)} files, {events} events of "
                  f"{ROW_KIB} KiB-row inserts, written through the 3-agent quorum in "
                  f"{load_s:.1f} s. Small events: {small_bytes / 1e6:.0f} MB, "
                  f"{small_events:,} events (mean {small_bytes / max(1, small_events):.0f} "
                  f"bytes) from {args.small_transactions} transactions of 5,000 rows, "
                  "binlog_row_event_max_size=256.")
        print(table)
        if not args.no_record:
            record("replica_catchup", "Serving replicas: catch-up from an agent vs the primary",
                   f".venv/bin/python -m bench.replica_catchup_bench --megabytes "
                   f"{args.megabytes}", table)
    finally:
        cluster.stop()
        primary.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
