"""Compact storage under :class:`~.open_offers.ShardState`: sorted runs of fixed-width entries.

An entry is one offer key (128 bits, kept as two ``uint64``: ``hi``, ``lo``), its version
(``uint64``: order time << partition bits | partition) and a ``uint32`` code: a cell code, or
:data:`TOMBSTONE`, or :data:`ABSENT`. That is **28 bytes**, in four contiguous numpy arrays
sorted by ``(hi, lo)``: no Python object per offer, nothing for the cyclic GC to scan.

A shard's state is a stack of such **runs**, oldest first, plus a small dict (the *overlay*,
owned by the shard) of the entries changed since its last flush. A key's state is its entry
in the overlay, else in the newest run holding it; :data:`ABSENT` in a newer run hides an
older entry (an expired tombstone). Runs are immutable:

- a flush turns the overlay into a new run; when the newest run has grown to at least
  1/:data:`MERGE_RATIO` of the one below it, the two are merged (newest entry per key wins),
  so a shard holds O(log n) runs and every entry is rewritten O(log n) times in all
  (the logarithmic method): a change costs O(log n) amortised, never O(state);
- with a directory (the recovery store's, shared by every process of a cluster), each run is
  written once as an immutable file (``shard-<n>/run-<uuid>.bin``: a 16-byte header then
  the four arrays), to a temporary name, fsynced, renamed, the directory fsynced. A snapshot
  only *names* the files, so it costs the runs written since the previous one, not the state;
  a restart maps the files (``mmap``) on first use, so resuming costs no reading up front.
  A snapshot naming a new file is a :class:`Durable`: the file is written when Bytewax
  pickles the snapshot to commit it — after taking every snapshot of the epoch — on a few
  dozen threads at once (concurrent fsyncs share the file system's journal commits), and the
  pickling waits until it is durable. (Written while the other shards were still
  snapshotting, the writing threads' turns at the GIL slowed the snapshots by ~0.1 s; the
  final snapshot of 200 000 offers, 256 files: 0.37–0.43 → 0.20–0.25 s.)

Files are only referenced once complete, so ``kill -9`` at any moment leaves every file of the
last committed snapshot intact (a half-written one is an orphan temporary, never read). A run
merged away is deleted only when :data:`KEEP_SNAPSHOTS` later snapshots of its shard *and*
:data:`KEEP_SECONDS` have passed: Bytewax resumes each key from its newest snapshot older than
the cluster's committed epoch, which trails the newest snapshot by about one epoch.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: Code of a tombstone entry (the version is the delete's).
TOMBSTONE = 0xFFFF_FFFF
#: Code of an entry that hides older runs' entries of its key (an expired tombstone).
ABSENT = 0xFFFF_FFFE
#: :data:`ABSENT` in an overlay dict (whose values are ``version << 32 | code``, never < 0).
ABSENT_VALUE = -1
#: Bits of a packed overlay value below the version.
CODE_BITS = 32
CODE_MASK = (1 << CODE_BITS) - 1

#: Merge the two newest runs while the newer has at least 1/MERGE_RATIO the older's entries.
MERGE_RATIO = 4
#: A merged-away file stays until this many later snapshots of its shard and this much time.
KEEP_SNAPSHOTS = 3
KEEP_SECONDS = 60.0

#: Subdirectory of the recovery store holding the run files, one directory per shard.
STATE_DIR = "jobpulse-state"

_MAGIC = b"JPRUN\x01\x00\x00"
_HEADER = 16  # magic + entry count (uint64)
_U64 = np.dtype("<u8")
_U32 = np.dtype("<u4")
_EMPTY64 = np.zeros(0, _U64)


class Run:
    """One immutable sorted run; from a file, its arrays are mapped on first use."""

    __slots__ = ("_arrays", "count", "expired_below", "name", "path")

    def __init__(
        self,
        arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
        count: int,
        *,
        name: str | None = None,
        path: Path | None = None,
        expired_below: int = 0,
    ) -> None:
        self._arrays = arrays
        self.count = count
        #: The file's name once written (None: only in memory so far).
        self.name = name
        self.path = path
        #: Tombstones of this run with a version below this have expired (read as ABSENT).
        self.expired_below = expired_below

    @classmethod
    def of(cls, hi: np.ndarray, lo: np.ndarray, ver: np.ndarray, code: np.ndarray) -> Run:
        return cls((hi, lo, ver, code), len(hi))

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(hi, lo, version, code), mapping the file on first use."""
        if self._arrays is None:
            assert self.path is not None
            self._arrays = _map_file(self.path, self.count)
        return self._arrays

    @property
    def loaded(self) -> bool:
        return self._arrays is not None

    def codes(self) -> np.ndarray:
        """The codes with this run's expired tombstones read as :data:`ABSENT`."""
        _, _, ver, code = self.arrays
        if self.expired_below <= 0:
            return code
        expired = (code == TOMBSTONE) & (ver < self.expired_below)
        return np.where(expired, np.uint32(ABSENT), code) if expired.any() else code

    def __len__(self) -> int:
        return self.count


# -- keys ------------------------------------------------------------------------------------


def split_keys(keys: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Python int keys (< 2**128) → (hi, lo) uint64 arrays."""
    if not keys:
        return _EMPTY64, _EMPTY64
    raw = b"".join([key.to_bytes(16, "little") for key in keys])
    pairs = np.frombuffer(raw, _U64).reshape(-1, 2)
    return pairs[:, 1].copy(), pairs[:, 0].copy()


def join_keys(hi: np.ndarray, lo: np.ndarray) -> list[int]:
    return [(h << 64) | low for h, low in zip(hi.tolist(), lo.tolist(), strict=True)]


def find(run: Run, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Index in ``run`` of each key (hi, lo), or -1: one vectorised binary search on ``hi``;
    the rare keys whose 64 high bits equal another key's are resolved by a short scan."""
    rhi, rlo, _, _ = run.arrays
    n = len(rhi)
    found = np.full(len(hi), -1, np.int64)
    if n == 0 or len(hi) == 0:
        return found
    pos = np.searchsorted(rhi, hi)
    at = np.minimum(pos, n - 1)
    same_hi = (pos < n) & (rhi[at] == hi)
    exact = same_hi & (rlo[at] == lo)
    found[exact] = pos[exact]
    for i in np.flatnonzero(same_hi & ~exact).tolist():
        j, h, want = int(pos[i]) + 1, hi[i], lo[i]
        while j < n and rhi[j] == h:
            if rlo[j] == want:
                found[i] = j
                break
            j += 1
    return found


def lookup(runs: list[Run], keys: list[int]) -> dict[int, int]:
    """The packed state (``version << 32 | code``, or :data:`ABSENT_VALUE`) of each of
    ``keys`` found in ``runs`` (newest run first); keys in no run are left out."""
    out: dict[int, int] = {}
    if not keys or not runs:
        return out
    hi, lo = split_keys(keys)
    # Needles in key order: consecutive binary searches then share most of their path
    # through the run (cache lines already loaded), which matters once runs outgrow the cache.
    order = np.argsort(hi, kind="stable")
    hi, lo = hi[order], lo[order]
    keys = [keys[i] for i in order.tolist()]
    pending = np.arange(len(keys))
    for run in reversed(runs):
        if not run.count:
            continue
        idx = find(run, hi[pending], lo[pending])
        hit = idx >= 0
        if not hit.any():
            continue
        at = idx[hit]
        _, _, rver, rcode = run.arrays
        ver, code = rver[at], rcode[at]
        if run.expired_below > 0:  # only the hits, never the whole run, per batch
            code = np.where((code == TOMBSTONE) & (ver < run.expired_below), ABSENT, code)
        for q, v, c in zip(pending[hit].tolist(), ver.tolist(), code.tolist(), strict=True):
            out[keys[q]] = ABSENT_VALUE if c == ABSENT else (v << CODE_BITS) | c
        pending = pending[~hit]
        if not len(pending):
            break
    return out


# -- building and merging runs ---------------------------------------------------------------


def run_from(entries: dict[int, int]) -> Run:
    """A run of an overlay's entries (key → ``version << 32 | code`` or ABSENT_VALUE)."""
    hi, lo = split_keys(list(entries))
    values = list(entries.values())
    ver = np.array([v >> CODE_BITS if v >= 0 else 0 for v in values], _U64)
    code = np.array([v & CODE_MASK if v >= 0 else ABSENT for v in values], _U32)
    order = np.lexsort((lo, hi))
    return Run.of(hi[order], lo[order], ver[order], code[order])


def merge(older: Run, newer: Run, *, bottom: bool) -> Run:
    """One run of ``older`` and ``newer`` (newer entries win); expired tombstones become
    :data:`ABSENT`, dropped altogether at the ``bottom`` (nothing older left to hide)."""
    ohi, olo, over, _ = older.arrays
    nhi, nlo, nver, _ = newer.arrays
    ocode, ncode = older.codes(), newer.codes()
    dup = find(older, nhi, nlo)
    keep = np.ones(len(ohi), bool)
    keep[dup[dup >= 0]] = False
    ohi, olo, over, ocode = ohi[keep], olo[keep], over[keep], ocode[keep]
    pos = np.searchsorted(ohi, nhi)
    at = np.minimum(pos, max(len(ohi) - 1, 0))
    if len(ohi) and ((pos < len(ohi)) & (ohi[at] == nhi)).any():
        # Two keys share their 64 high bits: order by the full key (rare, slower).
        hi = np.concatenate([ohi, nhi])
        lo = np.concatenate([olo, nlo])
        order = np.lexsort((lo, hi))
        parts = [hi[order], lo[order], np.concatenate([over, nver])[order]]
        parts.append(np.concatenate([ocode, ncode])[order])
    else:
        total = len(ohi) + len(nhi)
        is_new = np.zeros(total, bool)
        is_new[pos + np.arange(len(nhi))] = True
        parts = []
        for old_part, new_part in ((ohi, nhi), (olo, nlo), (over, nver), (ocode, ncode)):
            out = np.empty(total, old_part.dtype)
            out[is_new] = new_part
            out[~is_new] = old_part
            parts.append(out)
    if bottom:
        alive = parts[3] != ABSENT
        if not alive.all():
            parts = [part[alive] for part in parts]
    return Run.of(*parts)


# -- files -----------------------------------------------------------------------------------


def write_run(directory: Path, run: Run) -> tuple[str, Future[None]]:
    """Queue writing ``run`` as a new immutable file in ``directory``; return its name and
    the future of the writing (durable once that is done; never visible half-written). The
    writing starts when a snapshot naming it is pickled (see :class:`Durable`)."""
    name = f"run-{uuid.uuid4().hex}.bin"
    written: Future[None] = Future()
    with _queue_lock:
        _queue.append((written, (directory, name, run.count, run.arrays)))
    return name, written


def _write_durably(directory: Path, name: str, count: int, arrays: Iterable[np.ndarray]) -> None:
    """Write a run file under a temporary name, fsync it, rename it, fsync the directory.
    (Plain ``os`` calls: on a pool thread, every Python step is a turn at the GIL.)"""
    payload = b"".join([_MAGIC, np.uint64(count).tobytes(), *map(_bytes_of, arrays)])
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        written = os.write(fd, payload)
        while written < len(payload):  # a short write (rare): the rest
            written += os.write(fd, payload[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, os.path.join(directory, name))
    _fsync_directory(directory)


def _bytes_of(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array)).cast("B")


#: Threads that write run files (see the module doc).
WRITE_THREADS = 32
_pool: list[ThreadPoolExecutor] = []
#: Writes queued by :func:`write_run`, not started yet: (their future, their arguments).
_queue: list[tuple[Future[None], tuple[Any, ...]]] = []
_queue_lock = threading.Lock()


def _start_queued_writes() -> None:
    """Start every queued write on the pool, all at once."""
    with _queue_lock:
        queued = _queue[:]
        _queue.clear()
        if queued and not _pool:
            _pool.append(ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="run-write"))
    for written, arguments in queued:
        _pool[0].submit(_write_into, written, arguments)


def _write_into(written: Future[None], arguments: tuple[Any, ...]) -> None:
    if not written.set_running_or_notify_cancel():
        return
    try:
        _write_durably(*arguments)
    except BaseException as exc:  # handed to whoever waits for the file
        written.set_exception(exc)
    else:
        written.set_result(None)


def _forget_parents_writes() -> None:
    # A forked process (a local cluster's member) starts its own pool: threads do not
    # survive a fork, and the parent's queued writes are the parent's.
    _pool.clear()
    _queue.clear()


os.register_at_fork(after_in_child=_forget_parents_writes)


class Durable:
    """A snapshot naming run files that may not be written yet: pickling it — which Bytewax
    does before writing it to the recovery store, once it has taken every snapshot of the
    epoch — starts every queued write and waits until its own files are durable (raising
    their error, if any); it unpickles as the bare snapshot."""

    __slots__ = ("pending", "snapshot")

    def __init__(self, snapshot: tuple[Any, ...], pending: list[Future[None]]) -> None:
        self.snapshot = snapshot
        self.pending = pending

    def wait(self) -> tuple[Any, ...]:
        """The snapshot, once every file it names is durable."""
        _start_queued_writes()
        for future in self.pending:
            future.result()
        self.pending = []
        return self.snapshot

    def __reduce__(self) -> tuple[type[tuple[Any, ...]], tuple[tuple[Any, ...]]]:
        return tuple, (self.wait(),)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _map_file(path: Path, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A run file's arrays, mapped read-only (pages are read on first touch)."""
    try:
        with open(path, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"state file {path} is missing: the recovery directory is incomplete (every "
            "process of a cluster must share the same recovery directory)"
        ) from None
    if mapped[:8] != _MAGIC or int(np.frombuffer(mapped, _U64, 1, 8)[0]) != count:
        raise ValueError(f"state file {path} is not the run its snapshot names")
    hi = np.frombuffer(mapped, _U64, count, _HEADER)
    lo = np.frombuffer(mapped, _U64, count, _HEADER + 8 * count)
    ver = np.frombuffer(mapped, _U64, count, _HEADER + 16 * count)
    code = np.frombuffer(mapped, _U32, count, _HEADER + 24 * count)
    return hi, lo, ver, code


def _from_bytes(raw: bytes, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.frombuffer(raw, _U64, count, 0),
        np.frombuffer(raw, _U64, count, 8 * count),
        np.frombuffer(raw, _U64, count, 16 * count),
        np.frombuffer(raw, _U32, count, 24 * count),
    )


#: A run in a snapshot: (file name, or the arrays' bytes without a directory; entries;
#: expired-below version).
RunRef = tuple[str | bytes, int, int]
#: A merged-away file waiting for deletion: (name, retired at (epoch s), snapshots since).
Retired = tuple[str, float, int]


class RunStack:
    """The runs of one shard, oldest first, and the files they live in."""

    __slots__ = ("directory", "retired", "runs")

    def __init__(
        self,
        runs: list[Run] | None = None,
        directory: Path | None = None,
        retired: list[Retired] | None = None,
    ) -> None:
        self.runs: list[Run] = runs if runs is not None else []
        #: The shard's directory (None: runs live only in memory and in snapshots).
        self.directory = directory
        self.retired: list[Retired] = retired if retired is not None else []

    def __len__(self) -> int:
        return sum(run.count for run in self.runs)

    def add(self, run: Run) -> None:
        """Push a new newest run, merging while the newest is ≥ 1/MERGE_RATIO of the next."""
        runs = self.runs
        runs.append(run)
        while len(runs) >= 2 and runs[-1].count * MERGE_RATIO >= runs[-2].count:
            newer, older = runs.pop(), runs.pop()
            merged = merge(older, newer, bottom=not runs)
            if merged.count:  # (empty when every entry was an expired tombstone)
                runs.append(merged)
            self._retire(older, newer)

    def _retire(self, *runs: Run) -> None:
        now = time.time()
        self.retired += [(run.name, now, 0) for run in runs if run.name is not None]

    def refs(self) -> tuple[list[RunRef], list[Future[None]]]:
        """The runs for a snapshot: each queued to be written to a file if it is not yet
        (with a directory), or as bytes (without); then old files past their grace are
        deleted. Also the futures of the files queued now (durable once they are done)."""
        refs: list[RunRef] = []
        pending: list[Future[None]] = []
        for run in self.runs:
            if self.directory is None:
                raw = b"".join(np.ascontiguousarray(a).tobytes() for a in run.arrays)
                refs.append((raw, run.count, run.expired_below))
                continue
            if run.name is None:
                run.name, durable = write_run(self.directory, run)
                run.path = self.directory / run.name
                pending.append(durable)
            refs.append((run.name, run.count, run.expired_below))
        self._collect_garbage()
        return refs, pending

    def _collect_garbage(self) -> None:
        """Delete the merged-away files no snapshot can still need (see the module doc)."""
        if not self.retired or self.directory is None:
            return
        now, kept = time.time(), []
        for name, since, snapshots in self.retired:
            if snapshots + 1 >= KEEP_SNAPSHOTS and now - since >= KEEP_SECONDS:
                (self.directory / name).unlink(missing_ok=True)
            else:
                kept.append((name, since, snapshots + 1))
        self.retired = kept

    @classmethod
    def restore(
        cls, refs: Iterable[RunRef], directory: Path | None, retired: list[Retired]
    ) -> RunStack:
        """Runs of a snapshot; files are mapped only when first used."""
        runs = []
        for source, count, expired_below in refs:
            if isinstance(source, bytes):
                runs.append(Run(_from_bytes(source, count), count, expired_below=expired_below))
                continue
            if directory is None:
                raise ValueError("a snapshot naming state files needs the recovery directory")
            path = directory / source
            runs.append(Run(None, count, name=source, path=path, expired_below=expired_below))
        return cls(runs, directory, list(retired))

    def expire(self, limit: int, overlay: dict[int, int]) -> int:
        """Mark every run's tombstones with a version below ``limit`` expired; return how
        many of them were live (not hidden by a newer run or by ``overlay``)."""
        expired = 0
        runs = self.runs
        for i, run in enumerate(runs):
            if run.expired_below >= limit:
                continue
            hi, lo, ver, code = run.arrays
            due = (code == TOMBSTONE) & (ver < limit) & (ver >= run.expired_below)
            if due.any():
                chi, clo = hi[due], lo[due]
                live = np.ones(len(chi), bool)
                for newer in runs[i + 1 :]:
                    live &= find(newer, chi, clo) < 0
                expired += sum(key not in overlay for key in join_keys(chi[live], clo[live]))
            run.expired_below = limit
        return expired

    def items(self) -> dict[int, int]:
        """Every key's packed state in the runs (ABSENT_VALUE included): for tests."""
        out: dict[int, int] = {}
        for run in self.runs:
            hi, lo, ver, _ = run.arrays
            code = run.codes()
            for key, v, c in zip(join_keys(hi, lo), ver.tolist(), code.tolist(), strict=True):
                out[key] = ABSENT_VALUE if c == ABSENT else (v << CODE_BITS) | c
        return out


def shard_directory(root: Path | None, shard: int | None) -> Path | None:
    """Where a shard's run files live under the recovery store (None without a store)."""
    if root is None or shard is None:
        return None
    return root / STATE_DIR / f"shard-{shard:03d}"
