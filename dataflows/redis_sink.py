"""The Redis sink: absolute cell counts, window counts and partition progress, one write per batch.

Each worker owns disjoint keys/fields (a cell or a partition is one stateful key, so exactly
one worker computes it), and every value written is absolute, so writes from different workers
never conflict and a replay after a crash rewrites the same numbers.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from jobpulse import metrics
from jobpulse.delta import Cell
from jobpulse.errors import exit_now
from jobpulse.outage import Outage
from jobpulse.settings import Settings
from jobpulse.store import (
    PartitionProgress,
    Store,
    WindowCounts,
    is_auth_error,
    redis_unavailable,
)

from .items import CellUpdate


def merge_updates(
    items: list[Any],
) -> tuple[dict[Cell, int], dict[int, WindowCounts], dict[int, PartitionProgress]]:
    """Fold a batch of ``(key, CellUpdate | PartitionProgress)`` into one Store.write's input.

    Later items win (they carry newer absolute values).
    """
    cells: dict[Cell, int] = {}
    windows: dict[int, WindowCounts] = {}
    partitions: dict[int, PartitionProgress] = {}
    for key, value in items:
        if isinstance(value, CellUpdate):
            cells[value.cell] = value.count
            for start, (opened, closed) in value.windows.items():
                window = windows.get(start)
                if window is None:
                    window = windows[start] = WindowCounts(start)
                if opened:
                    window.opened[value.cell] = opened
                if closed:
                    window.closed[value.cell] = closed
        elif isinstance(value, PartitionProgress):
            partitions[int(key)] = value
        else:
            raise TypeError(f"unexpected item for Redis: {value!r}")
    return cells, windows, partitions


#: What a Redis outage raises (a refused or reset connection, a timeout, a restart's loading).
_OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class _RedisPartition(StatelessSinkPartition[Any]):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store = Store.connect(settings, check=False)
        self._outage = Outage(f"Redis at {settings.redis_address}", settings.outage_limit_seconds)

    def write_batch(self, items: list[Any]) -> None:
        cells, windows, partitions = merge_updates(items)
        if not (cells or windows or partitions):
            return
        while True:
            started = time.perf_counter()
            try:
                self._store.write(cells=cells, windows=windows, partitions=partitions)
            except _OUTAGE_ERRORS as exc:
                if is_auth_error(exc):  # a wrong password does not heal by waiting
                    exit_now(redis_unavailable(self._settings, exc))
                time.sleep(self._outage.failed(exc))
                continue
            metrics.REDIS_WRITE_SECONDS.observe(time.perf_counter() - started)
            if partitions:
                metrics.PARTITIONS.update(partitions)
            for cell, count in cells.items():  # (a handful of cells per batch)
                metrics.OPEN_OFFERS.labels(cell.category, cell.continent).set(count)
            self._outage.succeeded()
            return

    def close(self) -> None:
        self._store.client.close()


class RedisSink(DynamicSink[Any]):
    """Writes the dataflow's absolute values through :class:`jobpulse.store.Store`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self._settings)
