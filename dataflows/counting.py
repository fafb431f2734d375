"""Counting: deltas → open offers per cell and opened/closed per tumbling event-time window.

Two stages, both pure:

1. :func:`preaggregate` folds a batch of deltas on one worker into one :class:`CellChange` per
   cell (~70 cells), so the keyed count step handles a handful of items per batch whatever the
   traffic and no hot cell bounds throughput.
2. :class:`CellCounter` is the keyed state of one cell: the absolute open-offer count and the
   retained recent windows. It returns absolute values (:class:`CellUpdate`) that Redis stores
   as they are, so replaying input after a crash rewrites the same numbers.

Windows: a delta's window is ``event_ms - event_ms % window_ms`` (its event time is the offer's
``published_at``, else the offers record's timestamp); an increment counts as *opened*, a
decrement as *closed* in that window. A cell retains the windows within :data:`RETENTION_MS`
of the newest window it has seen; a delta for an older window that is no longer retained is a
*late* delta: it still changes the open-offer count (that is never windowed), its window in
Redis keeps its last value, and it is added to the ``late`` counter of its source partition —
never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobpulse.delta import Cell

from .items import CellChange, CellUpdate, StateOutput

#: How far behind the newest window of a cell a window is still updated (2 hours).
RETENTION_MS = 2 * 3600 * 1000


def preaggregate(outputs: list[StateOutput], window_ms: int) -> dict[Cell, CellChange]:
    """Fold the deltas of a batch into one change per cell."""
    nets: dict[Cell, int] = {}
    windows: dict[Cell, dict[tuple[int, int], list[int]]] = {}
    for output in outputs:
        for sign, cell, _offer_id, partition, _offset, _index, event_ms in output.deltas:
            nets[cell] = nets.get(cell, 0) + sign
            cell_windows = windows.get(cell)
            if cell_windows is None:
                cell_windows = windows[cell] = {}
            key = (event_ms - event_ms % window_ms, partition)
            slot = cell_windows.get(key)
            if slot is None:
                slot = cell_windows[key] = [0, 0]
            slot[0 if sign > 0 else 1] += 1
    return {cell: CellChange(net, windows[cell]) for cell, net in nets.items()}


@dataclass(slots=True)
class CellCounter:
    """Keyed state of one cell: absolute count and the retained windows."""

    count: int = 0
    #: window start ms → [opened, closed]
    windows: dict[int, list[int]] = field(default_factory=dict)
    #: Start of the newest window seen (-1: none yet).
    newest: int = -1

    def apply(
        self,
        cell: Cell,
        changes: list[CellChange],
        window_ms: int,
        retention_ms: int = RETENTION_MS,
    ) -> CellUpdate:
        """Apply pre-aggregated changes; return the absolute values they touched."""
        for change in changes:
            self.count += change.net
            for start, _partition in change.windows:
                if start > self.newest:
                    self.newest = start
        horizon = self.newest - retention_ms + window_ms
        touched: dict[int, tuple[int, int]] = {}
        late: dict[int, int] = {}
        for change in changes:
            for (start, partition), (opened, closed) in change.windows.items():
                slot = self.windows.get(start)
                if slot is None:
                    if start < horizon:
                        late[partition] = late.get(partition, 0) + opened + closed
                        continue
                    slot = self.windows[start] = [0, 0]
                slot[0] += opened
                slot[1] += closed
                touched[start] = (slot[0], slot[1])
        for start in [s for s in self.windows if s < horizon]:
            del self.windows[start]
        return CellUpdate(cell, self.count, touched, late)

    def current(self, cell: Cell) -> CellUpdate:
        """The cell's whole absolute state: its count and every retained window."""
        windows = {start: (opened, closed) for start, (opened, closed) in self.windows.items()}
        return CellUpdate(cell, self.count, windows, {})

    def snapshot(self) -> tuple[int, dict[int, tuple[int, int]], int]:
        return (self.count, {s: (o, c) for s, (o, c) in self.windows.items()}, self.newest)

    @classmethod
    def restore(cls, snapshot: tuple[int, dict[int, tuple[int, int]], int] | None) -> CellCounter:
        if snapshot is None:
            return cls()
        count, windows, newest = snapshot
        return cls(count, {s: [o, c] for s, (o, c) in windows.items()}, newest)
