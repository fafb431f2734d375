"""The Redis sink: absolute cell counts, window counts and partition progress, one write per batch.

Each worker owns disjoint keys/fields (a cell or a partition is one stateful key, so exactly
one worker computes it), and every value written is absolute, so writes from different workers
never conflict and a replay after a crash rewrites the same numbers.
"""

from __future__ import annotations

from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from jobpulse.delta import Cell
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress, Store, WindowCounts

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


class _RedisPartition(StatelessSinkPartition[Any]):
    def __init__(self, settings: Settings) -> None:
        self._store = Store.connect(settings)

    def write_batch(self, items: list[Any]) -> None:
        cells, windows, partitions = merge_updates(items)
        if cells or windows or partitions:
            self._store.write(cells=cells, windows=windows, partitions=partitions)

    def close(self) -> None:
        self._store.client.close()


class RedisSink(DynamicSink[Any]):
    """Writes the dataflow's absolute values through :class:`jobpulse.store.Store`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self._settings)
