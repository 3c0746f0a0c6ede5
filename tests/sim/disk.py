"""A simulated disk for the WAL store's own code (walstore.fs.FileSystem), modelled on what
disks and kernels really do, and deterministic for a seed.

- A write is visible to reads at once but durable only after `datasync` of its file; a
  crash keeps, tears (a prefix survives) or drops each unsynced write, independently — so
  later writes may survive where earlier ones did not, as with a page cache.
- A file's creation or removal is durable only after `sync_dir`; a crash may undo it.
- `datasync` may fail with EIO; the kernel then forgets the dirty pages (fsyncgate): what
  reached the disk is decided as in a crash, while reads still show the written bytes.
- `pwrite` and `replace_file` fail with ENOSPC while the disk is full.
- Any write, sync or replace may be the moment the node crashes (`SimCrash`), so crashes
  fall where writes are in flight.
- `lose()` is a lost disk: the node restarts empty.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class SimCrash(BaseException):
    """The simulation crashes the node in the middle of this disk operation."""


@dataclass
class DiskFaults:
    crash_in_io: float = 0.0  # chance that a write/sync/replace is where the node crashes
    eio: float = 0.0  # chance that a datasync fails with EIO


@dataclass
class DiskStats:
    crashes_in_io: int = 0
    eio: int = 0
    enospc: int = 0
    torn_writes: int = 0
    dropped_writes: int = 0
    lost_files: int = 0
    lost_disks: int = 0


@dataclass
class _File:
    current: bytearray = field(default_factory=bytearray)  # what reads see
    durable: bytearray = field(default_factory=bytearray)  # what a crash surely keeps
    # writes since the last sync: (offset, data). The store has at most one batch in
    # flight per file, but the model does not rely on it.
    unsynced: list[tuple[int, bytes]] = field(default_factory=list)
    generation: int = 0  # bumped when durable bytes change other than by growing


class SimDisk:
    def __init__(self, rng: random.Random, faults: DiskFaults | None = None) -> None:
        self.rng = rng
        self.faults = faults or DiskFaults()
        self.stats = DiskStats()
        self.files: dict[Path, _File] = {}  # names as the running node sees them
        self.durable_names: set[Path] = set()  # names a crash keeps
        self.dirs: set[Path] = set()
        self._removed: dict[Path, _File] = {}  # durable names unlinked, not yet dir-synced
        self._durable_view: tuple[object, dict[str, _File]] = (None, {})
        self.full = False
        self.version = 0  # bumped whenever durable state changes (checkers cache on it)
        # Called around every operation that removes durable bytes (a cut, a directory sync
        # after removals): the simulator checks no committed record leaves the disk.
        self.watch: Callable[[], Callable[[], None]] | None = None

    # ---- faults -----------------------------------------------------------------------------

    def _maybe_crash(self) -> None:
        if self.faults.crash_in_io and self.rng.random() < self.faults.crash_in_io:
            self.stats.crashes_in_io += 1
            raise SimCrash("crash during I/O")

    def crash(self) -> None:
        """The machine stops: unsynced writes are kept, torn or dropped; names not synced
        to their directory are forgotten (or come back, for removals)."""
        survivors: dict[Path, _File] = {}
        for path in sorted(set(self.files) | self.durable_names):
            if path not in self.durable_names:
                self.stats.lost_files += 1
                continue
            file = self.files.get(path)
            if file is None:  # removed, but the removal never reached the directory
                file = self._removed.get(path, _File())
            content = self._resolve(file)
            survivors[path] = _File(bytearray(content), bytearray(content))
        self.files = survivors
        self._removed = {}
        self.version += 1

    def _resolve(self, file: _File) -> bytearray:
        content = bytearray(file.durable)
        for at, data in file.unsynced:
            fate = self.rng.random()
            if fate < 1 / 3:
                self.stats.dropped_writes += 1
                continue
            if fate < 2 / 3 and len(data) > 1:
                self.stats.torn_writes += 1
                data = data[: self.rng.randrange(1, len(data))]
            if len(content) < at:
                content.extend(bytes(at - len(content)))
            content[at : at + len(data)] = data
        return content

    def lose(self) -> None:
        """A lost disk: everything is gone."""
        self.stats.lost_disks += 1
        self.files, self.durable_names, self.dirs, self._removed = {}, set(), set(), {}
        self.version += 1

    # ---- what is surely on disk (for the checkers) ------------------------------------------

    def durable_files(self, directory: Path) -> dict[str, _File]:
        """The files of DIRECTORY a crash keeps (read their `durable` bytes only)."""
        key = (directory, self.version, len(self.files))
        if self._durable_view[0] != key:
            self._durable_view = (key, {
                path.name: file for path, file in self.files.items()
                if path.parent == directory and path in self.durable_names})
        return self._durable_view[1]

    # ---- walstore.fs.FileSystem ---------------------------------------------------------------

    def is_dir(self, path: Path) -> bool:
        return path in self.dirs

    def make_dir(self, path: Path) -> None:
        self.dirs.add(path)

    def list_dir(self, path: Path) -> list[str]:
        return [p.name for p in self.files if p.parent == path]

    def exists(self, path: Path) -> bool:
        return path in self.files or path in self.dirs

    def read_file(self, path: Path) -> bytes:
        file = self.files.get(path)
        if file is None:
            raise FileNotFoundError(str(path))
        return bytes(file.current)

    def pread(self, path: Path, size: int, offset: int) -> bytes:
        file = self.files.get(path)
        if file is None:
            raise FileNotFoundError(str(path))
        return bytes(file.current[offset : offset + size])

    def pwrite(self, path: Path, parts: Sequence[bytes], offset: int) -> None:
        if self.full:
            self.stats.enospc += 1
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        file = self.files.get(path)
        if file is None:
            file = self.files[path] = _File()
        data = b"".join(parts)
        if len(file.current) < offset:
            file.current.extend(bytes(offset - len(file.current)))
        file.current[offset : offset + len(data)] = data
        file.unsynced.append((offset, data))
        self._maybe_crash()  # the write is in flight

    def datasync(self, path: Path) -> None:
        file = self.files.get(path)
        if file is None:
            raise FileNotFoundError(str(path))
        self._maybe_crash()
        if self.faults.eio and file.unsynced and self.rng.random() < self.faults.eio:
            self.stats.eio += 1
            file.durable = self._resolve(file)  # fsyncgate: the dirty pages are forgotten
            file.unsynced = []
            file.generation += 1
            self.version += 1
            raise OSError(errno.EIO, "Input/output error (simulated)")
        if file.current[: len(file.durable)] != file.durable:
            file.generation += 1
        file.durable = bytearray(file.current)
        file.unsynced = []
        self.version += 1

    def truncate(self, path: Path, size: int, *, writer_only: bool = False) -> None:
        file = self.files.get(path)
        if file is None:
            raise FileNotFoundError(str(path))
        check = self.watch() if self.watch is not None else None
        del file.current[size:]
        file.durable = bytearray(file.current)  # ftruncate + fsync: all of it is durable
        file.unsynced = []
        file.generation += 1
        self.version += 1
        if check is not None:
            check()

    def unlink(self, path: Path) -> None:
        file = self.files.pop(path, None)
        if file is not None and path in self.durable_names:
            self._removed = {**self._removed, path: file}

    def sync_dir(self, path: Path) -> None:
        check = self.watch() if self.watch is not None else None
        self.durable_names = {p for p in self.durable_names if p.parent != path} | {
            p for p in self.files if p.parent == path}
        self._removed = {p: f for p, f in self._removed.items() if p.parent != path}
        self.version += 1
        if check is not None:
            check()

    def replace_file(self, path: Path, data: bytes) -> None:
        if self.full:
            self.stats.enospc += 1
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        self._maybe_crash()  # before the rename: the old content stays
        self.files[path] = _File(bytearray(data), bytearray(data))
        self.durable_names.add(path)
        self.version += 1

    def release(self, path: Path, *, writer_only: bool = False) -> None:
        pass

    def close(self) -> None:
        pass
