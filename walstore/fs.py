"""Every file operation the WAL store does, behind one small interface.

`OsFileSystem` is the real one (POSIX calls, cached file descriptors). The simulator
(tests/sim/disk.py) implements the same interface over a simulated disk whose unsynced
writes a crash keeps, tears or drops — so the simulator runs the store's own code, not a
model of it. Paths are `pathlib.Path`; a file is addressed by its path, and the real
implementation keeps descriptors open behind it.

Durability contract (what a crash may do, and what the store relies on):
  - `pwrite` is visible to reads at once; it is durable only after `datasync` of its file;
  - a file's creation, removal or rename is durable only after `sync_dir` of its directory;
  - `truncate` is durable on return (the store calls it off the hot path);
  - `replace_file` is atomic: after a crash the file holds the old or the new content.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from walstore.errors import FsyncFailed


class FileSystem(Protocol):
    def is_dir(self, path: Path) -> bool: ...

    def make_dir(self, path: Path) -> None:
        """Create PATH (and its parents), durably."""

    def list_dir(self, path: Path) -> list[str]: ...

    def exists(self, path: Path) -> bool: ...

    def read_file(self, path: Path) -> bytes:
        """The whole file; raises FileNotFoundError."""
        ...

    def pread(self, path: Path, size: int, offset: int) -> bytes: ...

    def pwrite(self, path: Path, parts: Sequence[bytes], offset: int) -> None:
        """Write PARTS contiguously at OFFSET, creating the file if needed. Raises OSError
        (ENOSPC on a full disk)."""

    def datasync(self, path: Path) -> None:
        """Make the file's content durable (fdatasync). Raises OSError (EIO)."""

    def truncate(self, path: Path, size: int, *, writer_only: bool = False) -> None:
        """Cut the file to SIZE bytes, durably. WRITER_ONLY: called from the writing thread,
        which must leave the readers' cached handles alone."""

    def unlink(self, path: Path) -> None:
        """Remove the file if it exists (durable after `sync_dir`)."""

    def sync_dir(self, path: Path) -> None: ...

    def replace_file(self, path: Path, data: bytes) -> None:
        """Atomically replace PATH's content: temp file, fsync, rename, fsync directory.
        Raises OSError (ENOSPC on a full disk: the old content stays) or, when an fsync
        fails, walstore.FsyncFailed."""

    def release(self, path: Path, *, writer_only: bool = False) -> None:
        """Forget cached handles of PATH (a sealed or removed file)."""

    def close(self) -> None: ...


def _sync(fd: int, path: Path) -> None:
    """fsync FD; a failure (ENOSPC included) is FsyncFailed: the kernel may have dropped
    the dirty pages, so the caller must not retry on the same page cache."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise FsyncFailed(f"{path}: fsync failed: {exc}; the agent must restart") from exc


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class OsFileSystem:
    """The real file system. Write descriptors are used by the group-commit thread, read
    descriptors by the event loop; each side has its own cache."""

    def __init__(self) -> None:
        self._writers: dict[Path, int] = {}
        self._readers: dict[Path, int] = {}
        self._lock = threading.Lock()  # the caches are touched from two threads

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def make_dir(self, path: Path) -> None:
        path.mkdir(parents=True)
        self.sync_dir(path.parent)

    def list_dir(self, path: Path) -> list[str]:
        return [entry.name for entry in path.iterdir()]

    def exists(self, path: Path) -> bool:
        return path.exists()

    def read_file(self, path: Path) -> bytes:
        return path.read_bytes()

    def pread(self, path: Path, size: int, offset: int) -> bytes:
        """Safe from several threads (replica and read-ahead readers): two first reads of a
        file at once keep one handle, and the other is closed."""
        fd = self._readers.get(path)
        if fd is None:
            opened = os.open(path, os.O_RDONLY)
            with self._lock:
                fd = self._readers.setdefault(path, opened)
            if fd != opened:
                os.close(opened)
        return os.pread(fd, size, offset)

    def _writer(self, path: Path) -> int:
        fd = self._writers.get(path)
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            with self._lock:
                self._writers[path] = fd
        return fd

    def pwrite(self, path: Path, parts: Sequence[bytes], offset: int) -> None:
        fd = self._writer(path)
        index = 0
        while index < len(parts):
            chunk = parts[index : index + _IOV_MAX]
            written = os.pwritev(fd, chunk, offset)
            total = sum(len(p) for p in chunk)
            if written < total:  # short writes happen on full disks: finish piece by piece
                view = memoryview(b"".join(chunk))[written:]
                while view:
                    more = os.pwrite(fd, view, offset + written)
                    if more == 0:  # no progress: the disk is full
                        raise OSError(errno.ENOSPC, "short write made no progress")
                    view = view[more:]
                    written += more
            offset += total
            index += len(chunk)

    def datasync(self, path: Path) -> None:
        os.fdatasync(self._writer(path))

    def truncate(self, path: Path, size: int, *, writer_only: bool = False) -> None:
        # Readers keep their handles (the same file; threads may be reading committed
        # records below SIZE through them): closing one under a reading thread could make
        # its pread hit a reused descriptor.
        self.release(path, writer_only=True)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        self.release(path)
        path.unlink(missing_ok=True)

    def sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace_file(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:  # a short write (a full disk) must not leave a half file behind
                    written = os.write(fd, view)
                    if written == 0:
                        raise OSError(errno.ENOSPC, "short write made no progress")
                    view = view[written:]
                _sync(fd, tmp)
            finally:
                os.close(fd)
        except OSError:
            tmp.unlink(missing_ok=True)  # the old file is intact; give back the space
            raise
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            _sync(dir_fd, path.parent)
        finally:
            os.close(dir_fd)

    def release(self, path: Path, *, writer_only: bool = False) -> None:
        with self._lock:
            fds = [self._writers.pop(path, None)]
            if not writer_only:
                fds.append(self._readers.pop(path, None))
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            fds = [*self._writers.values(), *self._readers.values()]
            self._writers.clear()
            self._readers.clear()
        for fd in fds:
            os.close(fd)
