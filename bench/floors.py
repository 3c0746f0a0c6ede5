"""Floors that benchmarks print beside their figures, measured in the same run."""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from pathlib import Path


def fdatasync_latencies(directory: Path, size: int, count: int = 200) -> list[float]:
    """Seconds per append of SIZE bytes + fdatasync, COUNT times, in a fresh file."""
    path = directory / f"floor-{os.getpid()}-{threading.get_ident()}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    data = os.urandom(size)
    out = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, data)
            os.fdatasync(fd)
            out.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return out


def shared_disk_quorum_fsync(directory: Path, size: int, writers: int = 3, quorum: int = 2,
                             count: int = 300) -> list[float]:
    """Seconds until QUORUM of WRITERS concurrent append+fdatasync calls (one file each, all
    on DIRECTORY's disk) have returned: the fsync floor of a quorum whose agents share one
    disk, as in these benchmarks (in production each agent has its own)."""
    paths = [directory / f"floor-q{i}-{os.getpid()}.bin" for i in range(writers)]
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for p in paths]
    data = os.urandom(size)
    lock = threading.Lock()

    def write(fd: int, start: float, finished: list[float]) -> None:
        os.write(fd, data)
        os.fdatasync(fd)
        with lock:
            finished.append(time.perf_counter() - start)

    out = []
    try:
        for _ in range(count):
            finished: list[float] = []
            start = time.perf_counter()
            threads = [threading.Thread(target=write, args=(fd, start, finished)) for fd in fds]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            out.append(sorted(finished)[quorum - 1])
    finally:
        for fd, path in zip(fds, paths, strict=True):
            os.close(fd)
            path.unlink()
    return out


def loopback_rtt(count: int = 2000, size: int = 64) -> list[float]:
    """Seconds per request/response of SIZE bytes over a loopback TCP connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * size
    out = []
    with client:
        for _ in range(count):
            start = time.perf_counter()
            client.sendall(payload)
            got = 0
            while got < size:
                got += len(client.recv(65536))
            out.append(time.perf_counter() - start)
    server.close()
    thread.join(5)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)
