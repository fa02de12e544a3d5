"""Disk snapshot store: `<persistence_dir>/<session id>.json`, one file per snapshot.

A file is written to a temporary name, fsynced, renamed over the final name and the directory
fsynced, so a crash leaves the old snapshot or the new one, never half of one. File names come
from validated ids only, and every access goes through a descriptor of the directory
(`dir_fd`) with `O_NOFOLLOW`: a symlink named like a snapshot is never read or written through,
and a directory that is itself a symlink is refused (`PersistenceError`). A file larger than
`max_snapshot_bytes` is refused as corrupt from its size, without reading it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from jido_tasks.errors import PersistenceError, SnapshotCorrupt, SnapshotNotFound
from jido_tasks.ops.snapshots.service import SnapshotLimits, SnapshotStore

_FILE = re.compile(r"(session_[0-9a-f]{32})\.json")
_TEMP = re.compile(r"\.session_[0-9a-f]{32}\.[0-9a-f]{32}\.tmp")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SYMLINK = "is a symbolic link; refusing to follow it"


def _why(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason


class DiskSnapshotStore(SnapshotStore):
    """Snapshots as JSON files in one directory (created on first save, mode 0700)."""

    name = "disk"

    def __init__(self, directory: Path | str, limits: SnapshotLimits) -> None:
        super().__init__(limits)
        self.directory = Path(directory).absolute()

    def where(self, saved_id: str) -> str:
        return str(self.directory / f"{saved_id}.json")

    def _error(self, problem: str, saved_id: str | None = None) -> PersistenceError:
        return PersistenceError(str(self.directory), problem, saved_id)

    def _mkdir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise self._error("exists and is not a directory") from None
        except OSError as exc:
            raise self._error(f"cannot create the directory: {_why(exc)}") from None

    @contextmanager
    def _dir(self, create: bool = False) -> Iterator[int | None]:
        """A descriptor of the directory, or None when it does not exist (and not `create`)."""
        if create:
            self._mkdir()
        try:
            fd = os.open(self.directory, _DIR_FLAGS)
        except FileNotFoundError:
            if create:
                raise self._error("the directory vanished while in use") from None
            yield None
            return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self.directory.is_symlink():
                raise self._error(_SYMLINK) from None  # O_NOFOLLOW met a symlink
            raise self._error(f"cannot open the directory: {_why(exc)}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def remove_stale_temp(self, max_age: float) -> int:
        """Remove temporary files of saves that died (a crash between create and rename)."""
        removed = 0
        cutoff = time.time() - max_age
        with self._dir() as dfd:
            if dfd is None:
                return 0
            for name in os.listdir(dfd):
                if not _TEMP.fullmatch(name):
                    continue
                with suppress(FileNotFoundError):
                    info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                        os.unlink(name, dir_fd=dfd)
                        removed += 1
        return removed

    def _write(self, saved_id: str, data: bytes, saved_at: datetime) -> None:
        name = f"{saved_id}.json"
        with self._dir(create=True) as dfd:
            assert dfd is not None
            try:
                if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise PersistenceError(self.where(saved_id), _SYMLINK, saved_id)
            except FileNotFoundError:
                pass
            tmp = f".{saved_id}.{uuid.uuid4().hex}.tmp"
            try:
                fd = os.open(tmp, _WRITE_FLAGS, 0o600, dir_fd=dfd)
            except OSError as exc:
                raise self._error(f"not writable: {_why(exc)}", saved_id) from None
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                # rename replaces the name itself, never what a symlink there points to
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                os.fsync(dfd)
            except OSError as exc:
                _unlink_quietly(tmp, dfd)
                raise self._error(f"cannot write {name}: {_why(exc)}", saved_id) from None
            except BaseException:
                _unlink_quietly(tmp, dfd)
                raise

    def _read(self, saved_id: str) -> bytes:
        where = self.where(saved_id)
        with self._dir() as dfd:
            if dfd is None:
                raise SnapshotNotFound(saved_id, where)
            try:
                fd = os.open(f"{saved_id}.json", _READ_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                raise SnapshotNotFound(saved_id, where) from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
                    raise SnapshotCorrupt(saved_id, where, _SYMLINK) from None
                raise PersistenceError(where, f"cannot open: {_why(exc)}", saved_id) from None
            try:
                return self._read_bounded(fd, saved_id, where)
            except OSError as exc:
                raise PersistenceError(where, f"cannot read: {_why(exc)}", saved_id) from None
            finally:
                os.close(fd)

    def _read_bounded(self, fd: int, saved_id: str, where: str) -> bytes:
        """The file's bytes, never more than `limits.max_bytes` + 1 of them read (its size is
        checked first; one that grows meanwhile is caught by the bounded read)."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotCorrupt(saved_id, where, "is not a regular file")
        problem = self.limits.too_large(info.st_size)
        if problem is not None:
            raise SnapshotCorrupt(saved_id, where, problem)
        chunks: list[bytes] = []
        left = self.limits.max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        problem = self.limits.too_large(len(data))
        if problem is not None:
            raise SnapshotCorrupt(saved_id, where, f"{problem} (it grew while read)")
        return data

    def _remove(self, saved_id: str) -> None:
        """Unlink the name (a symlink there is removed itself; its target is never touched)."""
        where = self.where(saved_id)
        with self._dir() as dfd:
            if dfd is None:
                raise SnapshotNotFound(saved_id, where)
            try:
                os.unlink(f"{saved_id}.json", dir_fd=dfd)
            except FileNotFoundError:
                raise SnapshotNotFound(saved_id, where) from None
            except OSError as exc:
                raise PersistenceError(where, f"cannot delete: {_why(exc)}", saved_id) from None
            os.fsync(dfd)

    def _ids(self) -> list[str]:
        with self._dir() as dfd:
            if dfd is None:
                return []
            try:
                with os.scandir(dfd) as entries:
                    found = [m.group(1) for e in entries if (m := _FILE.fullmatch(e.name))]
            except OSError as exc:
                raise self._error(f"cannot list the directory: {_why(exc)}") from None
        return sorted(found)


def _unlink_quietly(name: str, dfd: int) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=dfd)
