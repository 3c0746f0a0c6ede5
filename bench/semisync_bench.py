"""Commit latency and throughput of a MariaDB primary: (a) binlog only, (b) native semi-sync
to one real MariaDB replica, (c) semi-sync through a 3-agent Binkeeper quorum. Same
workload, same machine, same run."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.workload import Workload
from bench.floors import fdatasync_latencies, loopback_rtt, percentile, shared_disk_quorum_fsync
from bench.report import markdown_table, record
from tests.support.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
SEMI_SYNC_MASTER = [
    "--rpl-semi-sync-master-enabled=ON", "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
    "--rpl-semi-sync-master-wait-no-slave=ON", "--rpl-semi-sync-master-timeout=4294967295",
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def binlog_bytes(db: LocalMariaDB) -> int:
    return sum(p.stat().st_size for p in db.binlog_files())


def drive(db: LocalMariaDB, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        workload = Workload(lambda: db.connect(), seed=100 + index, writer=index + 1,
                            accounts=200)
        conn = db.connect()
        own: list[float] = []
        try:
            with conn.cursor() as cursor:
                txn = (index + 1) << 40
                while not stop.is_set():
                    txn += 1
                    started = time.perf_counter()
                    workload.transaction(cursor, txn)
                    own.append(time.perf_counter() - started)
        finally:
            conn.close()
            with lock:
                latencies.extend(own)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)  # the measured interval
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - started
    return {"tps": len(latencies) / elapsed, "p50": percentile(latencies, 0.5) * 1000,
            "p99": percentile(latencies, 0.99) * 1000, "count": len(latencies)}


def semi_sync_waits(primary: LocalMariaDB) -> tuple[int, int, int, int]:
    """(total ACK wait µs, waits, binlog commits, binlog group commits) so far."""
    status = dict(primary.query(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_tx_wait_time', "
        "'Rpl_semi_sync_master_tx_waits', 'Binlog_commits', 'Binlog_group_commits')"))
    return (int(status["Rpl_semi_sync_master_tx_wait_time"]),
            int(status["Rpl_semi_sync_master_tx_waits"]), int(status["Binlog_commits"]),
            int(status["Binlog_group_commits"]))


def driven_with_waits(primary: LocalMariaDB, clients: int, seconds: float) -> dict[str, Any]:
    """drive(), plus the primary's mean ACK wait and commits per binlog group commit."""
    before = semi_sync_waits(primary)
    result = drive(primary, clients, seconds)
    wait_us, waits, commits, groups = (a - b for a, b in zip(semi_sync_waits(primary), before,
                                                              strict=True))
    return result | {"ack_wait": f"{wait_us / max(1, waits) / 1000:.2f} ms",
                     "group": f"{commits / max(1, groups):.1f}"}


def wait_for(predicate: Any, timeout: float) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.01)
    return time.perf_counter() - started


def case_plain(root: Path, clients: int, seconds: float) -> dict[str, Any]:
    with LocalMariaDB(root / "plain") as db:
        Workload(lambda: db.connect(), accounts=200).setup()
        return drive(db, clients, seconds) | {"lag": "-", "cpu": "-", "ack_wait": "-",
                                              "group": "-"}


def case_native(root: Path, clients: int, seconds: float) -> dict[str, Any]:
    with LocalMariaDB(root / "primary", extra_args=SEMI_SYNC_MASTER) as primary, \
            LocalMariaDB(root / "replica", server_id=2,
                         extra_args=["--rpl-semi-sync-slave-enabled=ON"]) as replica:
        replica.query(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
                      "MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos")
        replica.query("START SLAVE")
        wait_for(lambda: primary.query("SHOW GLOBAL STATUS LIKE "
                                       "'Rpl_semi_sync_master_clients'")[0][1] == "1", 30)
        Workload(lambda: primary.connect(), accounts=200).setup()
        result = driven_with_waits(primary, clients, seconds)
        final = primary.query("SELECT @@gtid_binlog_pos")[0][0]
        lag = wait_for(lambda: replica.query("SELECT @@gtid_slave_pos")[0][0] == final, 60)
        return result | {"lag": f"{lag * 1000:.0f} ms", "cpu": "-"}


def case_quorum(root: Path, clients: int, seconds: float) -> dict[str, Any]:
    with LocalMariaDB(root / "primary", extra_args=SEMI_SYNC_MASTER) as primary:
        cluster = Cluster(root / "agents", 3, use_proxies=False, mariadb_port=primary.port)
        cluster.start()
        try:
            wait_for(lambda: (leader := cluster.leader()) is not None and (
                (cluster.agents[leader].timeline() or {}).get("source") or {}
            ).get("connected"), 30)
            Workload(lambda: primary.connect(), accounts=200).setup()
            pids = [a.process.pid for a in cluster.agents.values()]  # type: ignore[union-attr]
            cpu_before = sum(cpu_seconds(p) for p in pids)
            bytes_before = binlog_bytes(primary)
            result = driven_with_waits(primary, clients, seconds)
            final = primary.query("SELECT @@gtid_binlog_pos")[0][0]

            def all_hold() -> bool:
                points = {(t or {}).get("commit_lsn") for t in
                          (a.timeline() for a in cluster.agents.values())}
                return len(points) == 1
            lag = wait_for(all_hold, 60)
            cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
            megabytes = (binlog_bytes(primary) - bytes_before) / 1e6
            del final
            return result | {"lag": f"{lag * 1000:.0f} ms",
                             "cpu": f"{cpu / megabytes:.2f} s/MB ({megabytes:.1f} MB)"}
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each configuration; the median-p50 run is reported")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    (REPO / "bench" / "out").mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="semisync-", dir=REPO / "bench" / "out"))
    rows = []
    floors = (f"Floors in this run (p50): one 800-byte append + fdatasync "
              f"{percentile(fdatasync_latencies(root, 800), 0.5) * 1000:.2f} ms; "
              f"2 of 3 concurrent ones on this one disk (the quorum's fsync floor here) "
              f"{percentile(shared_disk_quorum_fsync(root, 800), 0.5) * 1000:.2f} ms; "
              f"loopback round trip {percentile(loopback_rtt(), 0.5) * 1000:.3f} ms.")
    print(floors, flush=True)
    try:
        cases = (("(a) binlog, no replication", case_plain),
                 ("(b) native semi-sync, 1 replica", case_native),
                 ("(c) semi-sync via 3-agent quorum", case_quorum))
        for clients in args.clients:
            # Rounds interleave the configurations, so a slow spell of this shared machine's
            # disk hits all three alike; each keeps its round with the median p50.
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _case in cases}
            for round_index in range(args.rounds):
                for name, case in cases:
                    case_root = root / f"{clients}-{name[1]}-{round_index}"
                    case_root.mkdir()
                    runs[name].append(r := case(case_root, clients, args.seconds))
                    shutil.rmtree(case_root, ignore_errors=True)
                    print(clients, name, f"round {round_index + 1}: {r['tps']:.0f} commits/s, "
                          f"p50 {r['p50']:.2f} ms", flush=True)
            results = {}
            for name, _case in cases:
                ordered = sorted(runs[name], key=lambda run: run["p50"])
                results[name[1]] = r = ordered[len(ordered) // 2]
                spread = (f" (p50 {ordered[0]['p50']:.2f}–{ordered[-1]['p50']:.2f} over "
                          f"{len(ordered)} rounds)" if len(ordered) > 1 else "")
                rows.append([clients, name, f"{r['tps']:.0f}", f"{r['p50']:.2f}{spread}",
                             f"{r['p99']:.2f}", r["ack_wait"], r["group"], r["lag"], r["cpu"]])
            b, c = results["b"], results["c"]
            rows.append([clients, "(c) / (b)", f"{c['tps'] / b['tps']:.2f} (target ≥ 0.8)",
                         f"{c['p50'] / b['p50']:.2f} (target ≤ 1.25)", "", "", "", "", ""])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = markdown_table(
        ["clients", "configuration", "commits/s", "p50 ms", "p99 ms",
         "primary's mean ACK wait", "commits per binlog group commit",
         "replication lag after load", "agent CPU per MB of binlog (3 agents)"], rows)
    print(table)
    if not args.no_record:
        record("semisync", "MariaDB commits: binlog only vs native semi-sync vs Binkeeper quorum",
               ".venv/bin/python -m bench.semisync_bench", table +
               f"\n\nEach configuration ran {args.rounds} times, interleaved; the row is its "
               "median-p50 round, with the spread of p50 over the rounds." +
               "\n\nShort OLTP transactions (ledger insert + order insert/update or delete, "
               "secondary indexes), sync_binlog=1, innodb_flush_log_at_trx_commit=1. The native "
               "replica ACKs on receipt without fsync (MariaDB's semi-sync); Binkeeper ACKs "
               "after a majority of agents fsynced.\n\n"
               + floors + "\n\n"
               "Why (c) misses its targets. The primary's own counters explain the throughput: "
               "with AFTER_SYNC its ACK waits do not overlap (total wait time ≈ wall time), "
               "so commits/s ≈ commits per binlog group ÷ (ACK wait + the primary's own "
               "commit work), and the ACK wait is the whole difference between (b) and (c). "
               "The ACK wait has a floor here that native semi-sync does not pay: the native "
               "replica ACKs on receipt without any fsync, while the quorum needs 2 fsyncs and "
               "all 3 agents share this machine's one disk, which serializes them (the floor "
               "above: 2 of 3 concurrent fdatasyncs); in production each agent has its own "
               "disk and that floor is one fdatasync. A latency trace of the leader (1 client, "
               "medians) had: reading thread -> event loop 0.12 ms, propose -> appends on the "
               "wire 0.08 ms, -> quorum commit 1.0 ms (of which the shared-disk fsync floor "
               "~0.57 ms; the first follower's ack arrives ~0.9 ms after the send), commit -> "
               "ACK written 0.03 ms. The rest is Python and trio per message on each agent "
               "(~70 µs of decode/consensus/append/encode per append on a follower, the rest "
               "wake-ups and task switches on a 2-core machine also running mariadbd and the "
               "clients). Done so far: fsync on the node loop for small batches, frames and "
               "ACKs written straight from the loop, commit-only heartbeats unanswered "
               "(1 client: p50 2.97 -> 2.39 ms). What would move it further: reading the "
               "primary's socket on the event loop instead of a thread, and event parsing "
               "and framing in compiled code.")


if __name__ == "__main__":
    main()
