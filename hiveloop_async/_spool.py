"""An opt-in disk spool for batches the sender could not deliver (``spool_dir=``).

Layout of ``spool_dir`` (created ``0700``; every file ``0600``)::

    <time_ns:020>-<seq:010>-<owner>.hls   spooled batches, ready for replay (sorted = in order)
    tmp/      batches being written (never replayed; a dead writer's leftovers are removed)
    claimed/  batches a replayer took (renamed here atomically, so only one process gets each)
    corrupt/  files that failed their checks, kept aside for a human
    locks/    one lock file per live Spool (``fcntl.flock``): how others know it is alive
    .lock     taken while evicting for the size cap or recovering a dead owner's claims

A batch file is a fixed header (magic, version, metadata length, body length, CRC-32 of
metadata and body), JSON metadata (``destination``, ``events``, ``created``) and the request
body exactly as it would be POSTed. It is written to ``tmp/``, flushed, ``fsync``-ed and then
renamed into place, and the directory is ``fsync``-ed: a writer killed at any point (even
``SIGKILL`` mid-write) leaves either the whole batch or nothing visible to replay.

Several processes may share one directory: names never collide (each :class:`Spool` has its
own owner token), a replayer claims a batch by renaming it into ``claimed/`` (the rename
succeeds for exactly one process), and claims and temporary files of a process that died
are recovered by the next :class:`Spool` that finds its lock file free.

**Every method here does blocking file I/O (and ``fsync``)**: call it from a worker thread,
``await anyio.to_thread.run_sync(spool.write, body, destination, n)``, never on the event
loop. No method raises for an I/O problem: failures are counted in :meth:`Spool.stats` and
logged once. Within a process, one :class:`Spool` per directory (see :func:`open_spool`);
its methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ._exceptions import HiveLoopConfigError
from ._internal import logger, warn_once

__all__ = ["DEFAULT_SPOOL_MAX_BYTES", "Spool", "SpooledBatch", "open_spool"]

#: Default cap on the spool's size on disk (batch files ready for replay).
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024

_MAGIC = b"HLSP"
_VERSION = 1
# magic, version, 3 pad bytes, metadata length, body length, crc32(metadata + body)
_HEADER = struct.Struct(">4sB3xIQI")
_SUFFIX = ".hls"
_CHUNK = 1024 * 1024
_MAX_META = 64 * 1024


@dataclass
class SpooledBatch:
    """One batch taken from the spool for replay. Confirm or release it with the spool."""

    name: str
    body: bytes
    destination: str
    events: int
    created: float
    _path: Path


class Spool:
    """A directory of undelivered batches; see the module docstring. Blocking I/O.

    :param directory: the spool directory (created, with its subdirectories, ``0700``).
    :param max_bytes: cap on the batches kept; past it the oldest are removed (counted).
    :raises HiveLoopConfigError: if ``max_bytes`` is not positive, or the directory cannot
        be created or is not a directory.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_SPOOL_MAX_BYTES):
        if type(max_bytes) is not int or max_bytes <= 0:
            raise HiveLoopConfigError("spool_max_bytes must be a positive number of bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._seq = 0
        self._pid = -1
        self._owner = ""
        self._owner_fd: int | None = None
        self._size: int | None = None  # bytes of ready batches, as far as this process knows
        self._pending: list[str] = []  # names listed for replay, oldest first
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "written_batches",
                "written_events",
                "written_bytes",
                "replayed_batches",
                "replayed_events",
                "released_batches",
                "evicted_batches",
                "evicted_events",
                "oversize_batches",
                "oversize_events",
                "corrupt_files",
                "recovered_claims",
                "errors",
            ),
            0,
        )
        try:
            for sub in ("", "tmp", "claimed", "corrupt", "locks"):
                path = self.directory / sub if sub else self.directory
                path.mkdir(mode=0o700, parents=not sub, exist_ok=True)
                if not path.is_dir():
                    raise NotADirectoryError(str(path))
                if path.stat().st_uid == os.getuid():
                    os.chmod(path, 0o700)
        except OSError as exc:
            raise HiveLoopConfigError(
                f"spool_dir {str(directory)!r} cannot be used: {type(exc).__name__}"
            ) from None
        self._become_owner()
        self.recover()

    # -- ownership -----------------------------------------------------------------------

    def _become_owner(self) -> None:
        """Take a fresh owner token and hold its lock file (again after a fork)."""
        self._pid = os.getpid()
        self._owner = f"{self._pid}x{secrets.token_hex(4)}"
        path = self.directory / "locks" / f"{self._owner}.lock"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._owner_fd = fd

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:  # a forked child shares the parent's lock: take its own
            self._owner_fd = None
            self._pending = []
            self._become_owner()

    def _owner_alive(self, owner: str) -> bool:
        if owner == self._owner:
            return True
        path = self.directory / "locks" / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # -- writing -------------------------------------------------------------------------

    def write(self, body: bytes, destination: str, events: int) -> bool:
        """Spool one batch durably; True once it is on disk. Blocks (I/O and fsync).

        A batch larger than ``max_bytes`` is not written (counted ``oversize_*``). After the
        write, the oldest batches are removed while the spool is over its cap.
        """
        tmp: Path | None = None
        try:
            meta = orjson.dumps(
                {"destination": destination, "events": events, "created": time.time()}
            )
            crc = zlib.crc32(body, zlib.crc32(meta))
            header = _HEADER.pack(_MAGIC, _VERSION, len(meta), len(body), crc)
            size = len(header) + len(meta) + len(body)
            if size > self.max_bytes:
                self.counters["oversize_batches"] += 1
                self.counters["oversize_events"] += events
                return False
            with self._lock:
                self._check_fork()
                self._seq += 1
                name = f"{time.time_ns():020d}-{self._seq:010d}-{self._owner}{_SUFFIX}"
                tmp = self.directory / "tmp" / name
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    _write_all(fd, header + meta)
                    view = memoryview(body)
                    for start in range(0, len(body), _CHUNK):
                        _write_all(fd, view[start : start + _CHUNK])
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, self.directory / name)
                _fsync_dir(self.directory)
                self.counters["written_batches"] += 1
                self.counters["written_events"] += events
                self.counters["written_bytes"] += size
                if self._size is not None:
                    self._size += size
                if self._size is None or self._size > self.max_bytes:
                    self._enforce_cap()
            return True
        except Exception as exc:
            self._error("write", exc)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            return False

    def _ready(self) -> list[tuple[str, int]]:
        """(name, size) of the batches ready for replay, oldest first."""
        out = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False):
                    try:
                        out.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                    except FileNotFoundError:  # claimed or evicted meanwhile
                        continue
        out.sort()
        return out

    def _enforce_cap(self) -> None:
        with self._dir_lock():
            ready = self._ready()
            total = sum(size for _, size in ready)
            for name, size in ready:
                if total <= self.max_bytes:
                    break
                path = self.directory / name
                events = _peek_events(path)
                try:
                    path.unlink()
                except FileNotFoundError:  # replayed by someone meanwhile
                    total -= size
                    continue
                total -= size
                self.counters["evicted_batches"] += 1
                self.counters["evicted_events"] += events
            self._size = total
        if self.counters["evicted_batches"]:
            warn_once(
                f"spool-evict:{self.directory}",
                "hiveloop_async: the spool reached spool_max_bytes; the oldest batches are "
                "removed (counted in the spool's stats)",
            )

    # -- replay --------------------------------------------------------------------------

    def claim_next(self, destination: str | None = None) -> SpooledBatch | None:
        """Take the oldest ready batch for replay, or None when there is none. Blocks (I/O).

        The batch is moved to ``claimed/``; no other process can take it. Confirm it with
        :meth:`confirm` once delivered (it is deleted) or give it back with :meth:`release`.
        With ``destination``, batches spooled for another destination are left in place.
        Corrupt or truncated files are moved to ``corrupt/``, counted and skipped.
        """
        with self._lock:
            try:
                self._check_fork()
                passed: set[str] = set()  # other destinations' batches, seen in this call
                while True:
                    if not self._pending:
                        self._pending = [n for n, _ in self._ready() if n not in passed]
                        if not self._pending:
                            return None
                    name = self._pending.pop(0)
                    claimed = self.directory / "claimed" / f"{name}~{self._owner}"
                    try:
                        os.rename(self.directory / name, claimed)
                    except FileNotFoundError:  # another process claimed it (or evicted it)
                        continue
                    batch = self._load(name, claimed)
                    if batch is None:
                        continue
                    if destination is not None and batch.destination != destination:
                        os.rename(claimed, self.directory / name)
                        passed.add(name)
                        continue
                    if self._size is not None:
                        self._size = max(0, self._size - _file_size(batch))
                    return batch
            except Exception as exc:
                self._error("claim", exc)
                return None

    def replay(self, destination: str | None = None) -> Generator[SpooledBatch, None, None]:
        """Yield the ready batches (of ``destination`` if given) oldest first; blocks (I/O).

        The caller confirms each delivered batch with :meth:`confirm`; one it neither
        confirms nor releases by the time it asks for the next (or closes the iterator) is
        released back to the spool. Stops when the spool is empty.
        """
        current: SpooledBatch | None = None
        try:
            while True:
                if current is not None and current._path.exists():
                    self.release(current)
                current = self.claim_next(destination)
                if current is None:
                    return
                yield current
        finally:
            if current is not None and current._path.exists():
                self.release(current)

    def confirm(self, batch: SpooledBatch) -> None:
        """The batch was delivered: delete it. Blocks (I/O); never raises."""
        try:
            batch._path.unlink()
            self.counters["replayed_batches"] += 1
            self.counters["replayed_events"] += batch.events
        except FileNotFoundError:
            pass
        except Exception as exc:
            self._error("confirm", exc)

    def release(self, batch: SpooledBatch) -> None:
        """The batch was not delivered: put it back, in its place. Blocks; never raises."""
        try:
            os.rename(batch._path, self.directory / batch.name)
            self.counters["released_batches"] += 1
            with self._lock:
                self._pending = []  # list again: it is the oldest once more
                if self._size is not None:
                    self._size += _file_size(batch)
        except FileNotFoundError:
            pass
        except Exception as exc:
            self._error("release", exc)

    def _load(self, name: str, path: Path) -> SpooledBatch | None:
        """Read and check a claimed file; a bad one goes to ``corrupt/`` (None)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
            magic, version, meta_len, body_len, crc = _HEADER.unpack_from(data)
            meta_end = _HEADER.size + meta_len
            if (
                magic != _MAGIC
                or version != _VERSION
                or meta_len > _MAX_META
                or len(data) != meta_end + body_len
            ):
                raise ValueError("bad header or length")
            meta_bytes = data[_HEADER.size : meta_end]
            body = data[meta_end:]
            if zlib.crc32(body, zlib.crc32(meta_bytes)) != crc:
                raise ValueError("checksum mismatch")
            meta = orjson.loads(meta_bytes)
            return SpooledBatch(
                name=name,
                body=body,
                destination=str(meta["destination"]),
                events=int(meta["events"]),
                created=float(meta.get("created", 0.0)),
                _path=path,
            )
        except (ValueError, struct.error, KeyError, TypeError):
            self._set_aside(name, path)
            return None

    def _set_aside(self, name: str, path: Path) -> None:
        self.counters["corrupt_files"] += 1
        warn_once(
            f"spool-corrupt:{self.directory}",
            "hiveloop_async: a spool file failed its checks and was moved to %s (counted)",
            self.directory / "corrupt",
        )
        try:
            os.rename(path, self.directory / "corrupt" / name)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()

    # -- recovery and stats --------------------------------------------------------------

    def recover(self) -> int:
        """Give back the claims and remove the temporary files of dead owners.

        Returns how many claimed batches went back to the spool. Blocks (I/O); never raises.
        Called when the spool is opened; call it again (from a thread) to pick up the
        leftovers of a process that died since.
        """
        back = 0
        try:
            with self._lock, self._dir_lock():
                alive: dict[str, bool] = {}

                def dead(owner: str) -> bool:
                    if owner not in alive:
                        alive[owner] = self._owner_alive(owner)
                    return not alive[owner]

                for entry in os.scandir(self.directory / "claimed"):
                    name, _, owner = entry.name.rpartition("~")
                    if name and dead(owner):
                        try:
                            os.rename(entry.path, self.directory / name)
                            back += 1
                        except FileNotFoundError:
                            pass
                for entry in os.scandir(self.directory / "tmp"):
                    owner = entry.name[: -len(_SUFFIX)].rsplit("-", 1)[-1]
                    if dead(owner):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                for entry in os.scandir(self.directory / "locks"):
                    owner = entry.name.removesuffix(".lock")
                    dead(owner)  # removes the lock files of dead owners
                self._pending = []
                self._size = None
            self.counters["recovered_claims"] += back
        except Exception as exc:
            self._error("recover", exc)
        return back

    def pending_batches(self) -> int:
        """How many batches are ready for replay now. Blocks (a directory listing)."""
        try:
            return len(self._ready())
        except Exception as exc:
            self._error("list", exc)
            return 0

    def stats(self) -> dict[str, int]:
        """This process's counters (written, replayed, evicted, oversize, corrupt, errors)."""
        return dict(self.counters)

    def close(self) -> None:
        """Drop this process's lock (its claims become recoverable). Never raises."""
        with self._lock:
            fd, self._owner_fd = self._owner_fd, None
            if fd is not None and os.getpid() == self._pid:
                with contextlib.suppress(OSError):
                    (self.directory / "locks" / f"{self._owner}.lock").unlink()
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _error(self, what: str, exc: BaseException) -> None:
        self.counters["errors"] += 1
        warn_once(
            f"spool-{what}:{self.directory}",
            "hiveloop_async: spool %s failed (%s: %s); the spool goes on (counted)",
            what,
            type(exc).__name__,
            errno.errorcode.get(getattr(exc, "errno", None) or 0, "-"),
        )
        logger.debug("hiveloop_async: spool %s failed", what, exc_info=exc)

    def __repr__(self) -> str:
        return f"<Spool {str(self.directory)!r} max_bytes={self.max_bytes}>"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size(batch: SpooledBatch) -> int:
    return _HEADER.size + len(batch.body) + 64  # metadata is small; an estimate is enough


def _peek_events(path: Path) -> int:
    """The event count in a batch file's metadata (0 when unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            _, _, meta_len, _, _ = _HEADER.unpack(head)
            if meta_len > _MAX_META:
                return 0
            meta: Any = orjson.loads(f.read(meta_len))
        return int(meta.get("events", 0))
    except Exception:
        return 0


_spools: dict[tuple[int, str], Spool] = {}
_spools_lock = threading.Lock()


def open_spool(
    directory: str | os.PathLike[str], max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
) -> Spool:
    """The process's one :class:`Spool` for ``directory`` (created on first use). Blocks.

    :raises HiveLoopConfigError: as :class:`Spool` does.
    """
    key = (os.getpid(), os.path.realpath(directory))
    with _spools_lock:
        spool = _spools.get(key)
        if spool is None:
            spool = _spools[key] = Spool(directory, max_bytes)
        else:
            spool.max_bytes = max_bytes
        return spool
