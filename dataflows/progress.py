"""The progress of ``jobpulse run``: records processed, records/s, lag and ETA on stderr.

Shown by the process that speaks for the run (:attr:`.runner.RunOptions.speaks_for_run`: a
one-process run, a local cluster's launcher, process 0 of an external cluster), for the
whole run whatever the number of processes: it is computed from what every process writes
to Redis (:meth:`jobpulse.store.Store.partitions`, the processed offsets and records of each
offers partition) against the offers topic's end offsets — the ones ``--once`` captured
(:data:`.kafka_io.CAPTURED_END`), else the high watermarks now. The dataflow itself does
nothing for it: a thread reads Redis (and asks Kafka) once per line.

The display starts once this process holds the run's Redis lease (before that the run may
still refuse to start, and must say so in one line, not under a progress bar), and the
summary stops it (:func:`stop_active`) so the summary comes last.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from jobpulse.progress import ProgressDisplay, ProgressThread, Sample
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress, Store, totals
from jobpulse.topics import EndOffsets

from .exclusive import lease_holder

#: How often the thread looks for the lease before the run started (the records processed
#: then are the baseline: the dataflow does not read before the lease is held).
START_POLL_S = 0.1

#: The display of this process's run, stopped by the summary.
_ACTIVE: list[ProgressThread] = []


class RunSampler:
    """Takes a :class:`Sample` of the run from Redis and Kafka (``None`` before it started)."""

    def __init__(self, settings: Settings, once: bool):
        self.settings = settings
        self.once = once
        self.end: dict[int, int] | None = None
        self.store = Store.connect(settings, check=False)
        self._ends: EndOffsets | None = None
        self._base: int | None = None

    def started(self) -> bool:
        """Whether this process holds the run's lease (so the run is about to read)."""
        if self._base is not None:
            return True
        owner = lease_holder(self.store)
        if owner is None or owner.get("pid") != os.getpid():
            return False
        self._base = totals(self.store.partitions().values()).records
        return True

    def end_offsets(self) -> dict[int, int] | None:
        """The offsets the run reads up to: captured at start (``--once``), else now."""
        if self.once:
            from . import kafka_io  # (loaded by the run by now; Bytewax comes with it)

            if self.end is None and kafka_io.CAPTURED_END:
                self.end = kafka_io.CAPTURED_END[0]
            return self.end
        if self._ends is None:
            self._ends = EndOffsets(self.settings, self.settings.offers_topic)
        return self._ends.read()

    def __call__(self) -> Sample | None:
        if not self.started():
            return None
        progress = self.store.partitions()
        records = totals(progress.values()).records
        assert self._base is not None
        if records < self._base:  # --recount cleared the prefix after the lease was taken
            self._base = 0
        return Sample(records - self._base, lag(progress, self.end_offsets()))


def lag(progress: Mapping[int, PartitionProgress], end: Mapping[int, int] | None) -> int | None:
    """Records between the processed offsets and ``end`` (``None``: end unknown)."""
    if end is None:
        return None
    none = PartitionProgress()
    return sum(max(0, high - progress.get(p, none).offset) for p, high in end.items())


class _Starting(ProgressThread):
    """A progress thread that polls often until the run started, then once per line."""

    def _loop(self) -> None:
        sampler = self.sample
        assert isinstance(sampler, RunSampler)
        while not self._stop.wait(START_POLL_S):
            try:
                if sampler.started():
                    break
            except Exception:  # Redis away: the run itself reports that
                continue
        super()._loop()


def start(settings: Settings, *, speaks_for_run: bool, once: bool) -> ProgressThread | None:
    """Start the run's progress display in this process, if it speaks for the run."""
    if not speaks_for_run:
        return None
    display = ProgressDisplay("run", interval_s=settings.progress_seconds)
    thread = _Starting(display, RunSampler(settings, once)).start()
    _ACTIVE.append(thread)
    return thread


def stop_active(*, final: bool = True) -> None:
    """Stop this process's run display (with ``final``, after one last line)."""
    while _ACTIVE:
        thread = _ACTIVE.pop()
        thread.stop(final=final)
        sampler = thread.sample
        if isinstance(sampler, RunSampler):
            sampler.store.client.close()
