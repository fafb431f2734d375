"""One dataflow run at a time per recovery store and per Redis prefix.

Two runs on the same recovery store or the same Redis prefix would both write deltas and
interleave absolute values in Redis. A run therefore holds, for its whole duration:

- :class:`RecoveryLock` — an exclusive ``flock`` on ``<recovery dir>/run.lock``, taken by the
  launching ``jobpulse run`` process (a local cluster's children are covered by it). The
  kernel drops it when the process dies, even on ``kill -9``.
- :class:`RunLease` — ``<prefix>:lease`` in Redis (``SET NX PX``, renewed every third of its
  TTL, released on exit), for runs on other machines or with another recovery dir that share
  the prefix. Held by the launcher, or by process 0 of an external cluster (pod 0 of the
  Kubernetes StatefulSet). A lease left by a dead run on this host (same host, process gone)
  is taken over at once; one from another host expires after :data:`LEASE_TTL_S`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
import redis

from jobpulse.errors import JobpulseError, UsageError
from jobpulse.offer import format_rfc3339
from jobpulse.store import Store

log = logging.getLogger("jobpulse.dataflow")

LOCK_FILE = "run.lock"
LEASE_TTL_S = 30.0


class AlreadyRunning(JobpulseError):
    """Another ``jobpulse run`` holds the recovery store or the Redis prefix."""


def _now() -> str:
    import time

    return format_rfc3339(int(time.time() * 1000))


def _owner(recovery_dir: Path) -> dict[str, object]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "recovery_dir": str(recovery_dir.resolve()),
        "since": _now(),
    }


def _describe(owner: dict[str, object]) -> str:
    return (
        f"since {owner.get('since', '?')} (pid {owner.get('pid', '?')} on "
        f"{owner.get('host', '?')}, recovery dir {owner.get('recovery_dir', '?')})"
    )


class RecoveryLock:
    """An exclusive ``flock`` on the recovery store, held until :meth:`release`."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    @classmethod
    def acquire(cls, recovery_dir: Path) -> RecoveryLock:
        """Lock ``recovery_dir``; :class:`AlreadyRunning` if another run holds it."""
        try:
            recovery_dir.mkdir(parents=True, exist_ok=True)
            file = open(recovery_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held for the run)
        except OSError as exc:
            raise UsageError(f"cannot use the recovery directory {recovery_dir}: {exc}") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            try:
                holder = orjson.loads(file.read() or "{}")
            except orjson.JSONDecodeError:
                holder = {}
            file.close()
            raise AlreadyRunning(
                f"another jobpulse run holds the recovery store {recovery_dir} {_describe(holder)}"
            ) from None
        except OSError as exc:
            file.close()
            raise UsageError(f"cannot lock the recovery directory {recovery_dir}: {exc}") from None
        file.seek(0)
        file.truncate()
        file.write(orjson.dumps(_owner(recovery_dir)).decode())
        file.flush()
        return cls(file)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class RunLease:
    """``<prefix>:lease`` held for the run and renewed by a background thread.

    If another run takes it anyway (e.g. this process was paused longer than the TTL),
    ``on_lost`` is called once so the run stops, and :attr:`lost` is set.
    """

    def __init__(self, store: Store, value: str, ttl_s: float) -> None:
        self.store = store
        self.value = value
        self.ttl_ms = int(ttl_s * 1000)
        self.lost = threading.Event()
        self.on_lost: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)

    @classmethod
    def acquire(cls, store: Store, recovery_dir: Path, *, ttl_s: float = LEASE_TTL_S) -> RunLease:
        """Take the prefix's lease and start renewing it; :class:`AlreadyRunning` if held."""
        value = orjson.dumps(_owner(recovery_dir)).decode()
        lease = cls(store, value, ttl_s)
        holder = store.acquire_lease(value, lease.ttl_ms)
        if holder is not None and not (
            _left_by_a_dead_process(holder)
            and store.renew_lease(value, lease.ttl_ms, replacing=holder)
        ):
            raise AlreadyRunning(
                f"another jobpulse run holds Redis prefix {store.keys.prefix!r} "
                f"{_describe(_parse(holder))}; stop it first (a crashed run's lease expires "
                f"after {ttl_s:.0f}s)"
            )
        if holder is not None:
            log.info("took over the Redis lease of a run that is gone: %s", holder)
        lease._thread.start()
        return lease

    def renew(self) -> bool:
        """Extend the lease now (also re-takes it after a ``--recount`` cleared the prefix)."""
        return self.store.renew_lease(self.value, self.ttl_ms)

    def _renew_loop(self) -> None:
        failing = False  # log a Redis outage once, not every renewal
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                renewed = self.renew()
            except redis.RedisError as exc:
                if not failing:
                    log.warning("could not renew the Redis lease (%s); retrying", exc)
                failing = True
                continue
            if failing:
                log.info("renewed the Redis lease again")
                failing = False
            if renewed:
                continue
            log.error("another jobpulse run took the Redis lease: stopping this run")
            self.lost.set()
            if self.on_lost is not None:
                self.on_lost()
            return

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self.store.release_lease(self.value)


def lease_holder(store: Store) -> dict[str, object] | None:
    """Who holds the run lease of ``store``'s prefix (``host``, ``pid``, ``recovery_dir``,
    ``since``), ``None`` when no run does. Raises ``redis.RedisError``."""
    held = store.client.get(store.keys.lease)
    return _parse(held.decode()) if held is not None else None


def _parse(value: str) -> dict[str, object]:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _left_by_a_dead_process(value: str) -> bool:
    """The lease was written by a process of this host that is gone (a crashed run; in a
    restarted container the new process may even have the same pid as the old one)."""
    holder = _parse(value)
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
