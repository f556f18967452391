"""One writer per run folder: an advisory lock on ``<logdir>/run.lock``.

    lock = RunLock(logdir)
    lock.acquire()          # raises RunLockedError naming the holder's PID and host
    ...                     # train
    lock.release()          # also released by the kernel when the process dies, even by SIGKILL

    holder = lock_holder(logdir)   # a Holder when another live process holds the folder, else None

The lock is ``fcntl.flock`` on the file, so a lock left by a killed process never blocks: the
kernel drops it with the process. The file also records the holder (host, PID, the process's start
time; its mtime is a heartbeat) for the messages, and for the cases flock cannot decide. On a
shared filesystem two hosts may both get the flock (not every network filesystem forwards it): a
record that names another host still counts as held while its heartbeat, refreshed every
``HEARTBEAT_S`` seconds by the holder, is younger than ``STALE_S``; older, its holder is gone and
the folder is free. On a filesystem without flock a record of this host counts while its PID runs
with the recorded start time (a recycled PID does not). A clean release empties the file, so only
a dead holder leaves a record behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
# Several missed heartbeats plus room for clock differences between hosts of a shared filesystem.
STALE_S = 300.0


class RunLockedError(RuntimeError):
    """Another process holds the run folder; the message names it."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run folder, as recorded in its lock file."""

    host: str
    pid: int
    started: float | None = None  # the process's start time (seconds since the epoch), if known
    heartbeat_age: float | None = None  # seconds since the holder last refreshed the record

    def describe(self) -> str:
        if not self.pid:
            return "another process (it has not recorded itself yet)"
        return f"process {self.pid} on host {self.host}"


def lock_holder(logdir: str | Path) -> Holder | None:
    """The holder of ``logdir`` if another live process has it (see the module docstring), else None."""
    path = Path(logdir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None  # no lock file (or unreadable): nobody ever locked this folder here
    try:
        return _probe(fd)
    finally:
        os.close(fd)


class RunLock:
    """The lock of one run folder, held by this process from ``acquire`` to ``release``."""

    def __init__(self, logdir: str | Path) -> None:
        self.path = Path(logdir) / LOCK_FILE
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the folder or raise ``RunLockedError``; the folder must exist."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _probe(fd, keep=True)
        except BaseException:
            os.close(fd)
            raise
        if holder is not None:
            os.close(fd)
            raise RunLockedError(_message(self.path.parent, holder))
        self._fd = fd
        _FORK_GUARD.add(self)
        self._write_record()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Empty the record and drop the lock (nothing to do if not held)."""
        if self._fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        fd, self._fd = self._fd, None
        _FORK_GUARD.discard(self)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a clean end leaves no record that could look like a live holder
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _write_record(self) -> None:
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}
        data = (json.dumps(record) + "\n").encode()
        fd = self._fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            fd = self._fd
            if fd is None:
                return
            with contextlib.suppress(OSError):
                os.utime(fd)  # the file's mtime is the heartbeat that other hosts read

    def _forget_in_child(self) -> None:
        # A forked child shares the open file, and with it the flock: close its copy so that the lock
        # ends with this process, not with a worker that outlives it.
        fd, self._fd = self._fd, None
        self._thread = None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


_FORK_GUARD: set[RunLock] = set()


def _after_fork_in_child() -> None:
    for lock in list(_FORK_GUARD):
        lock._forget_in_child()
    _FORK_GUARD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _probe(fd: int, keep: bool = False) -> Holder | None:
    """The live holder of the lock behind ``fd``, or None; with ``keep`` the flock stays taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flocked = True
    except BlockingIOError:
        return _read_record(fd) or Holder(host="unknown", pid=0)
    except OSError:
        flocked = False  # a filesystem without flock: the record alone decides
    holder = _read_record(fd)
    if holder is None:
        free = True
    elif holder.host == socket.gethostname():
        # Without flock a holder of this host is alive if its PID runs and started when recorded
        # (not a recycled PID).
        free = flocked or not _running(holder)
    else:
        # Another host's holder that stopped refreshing its record long ago is gone.
        free = holder.heartbeat_age is not None and holder.heartbeat_age > STALE_S
    if flocked and (not free or not keep):
        fcntl.flock(fd, fcntl.LOCK_UN)
    return None if free else holder


def _running(holder: Holder) -> bool:
    """Whether the recorded process of this host still runs (the same process, by its start time)."""
    if holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(holder.pid)
    return holder.started is None or started is None or abs(started - float(holder.started)) < 2.0


def _read_record(fd: int) -> Holder | None:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode()) if data.strip() else None
        if not isinstance(record, dict):
            return None
        age = time.time() - os.fstat(fd).st_mtime
        return Holder(
            host=str(record.get("host", "unknown")),
            pid=int(record.get("pid", 0)),
            started=record.get("started"),
            heartbeat_age=max(0.0, age),
        )
    except (OSError, ValueError, TypeError):
        return None  # a torn or foreign record: flock alone decides


def _message(logdir: Path, holder: Holder) -> str:
    if holder.host == socket.gethostname() or holder.heartbeat_age is None:
        return (
            f"{logdir} is in use by {holder.describe()}: one run folder has one writer. "
            "Wait for it to end, stop it, or choose another --logdir."
        )
    return (
        f"{logdir} is in use by {holder.describe()} (its lock was refreshed "
        f"{holder.heartbeat_age:.0f} s ago): one run folder has one writer. If that process is gone, "
        f"the lock counts as stale {STALE_S:.0f} s after its last refresh; or choose another --logdir."
    )


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where unavailable.

    Recorded so that a PID reused by an unrelated process can be told apart in the record.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None
