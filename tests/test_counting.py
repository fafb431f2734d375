"""Window assignment, pre-aggregation, absolute cell counts and late deltas."""

from __future__ import annotations

from jobpulse.dataflows.counting import CellCounter, preaggregate
from jobpulse.dataflows.items import CellChange, StateOutput
from jobpulse.delta import Cell

TECH = Cell("Tech", "Europe")
RETAIL = Cell("Retail", "Asia")
MINUTE = 60_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE  # a window start


def test_a_delta_counts_in_the_tumbling_window_holding_its_instant() -> None:
    instants = [T0, T0 + MINUTE - 1, T0 + MINUTE]
    changes = preaggregate([_output(0, [(1, TECH, t) for t in instants])], MINUTE)
    assert changes[TECH].windows == {(T0, 0): [2, 0], (T0 + MINUTE, 0): [1, 0]}
    ten_s = preaggregate([_output(0, [(1, TECH, T0 + 5_000)])], 10_000)
    assert ten_s[TECH].windows == {(T0, 0): [1, 0]}


def _output(partition: int, deltas: list[tuple[int, Cell, int]]) -> StateOutput:
    return StateOutput(
        [(sign, cell, f"o{i}", partition, i, 0, ts) for i, (sign, cell, ts) in enumerate(deltas)],
        {},
    )


def test_preaggregate_folds_a_batch_into_one_change_per_cell() -> None:
    outputs = [
        _output(0, [(1, TECH, T0), (1, TECH, T0 + 1), (-1, TECH, T0 + MINUTE), (1, RETAIL, T0)]),
        _output(3, [(1, TECH, T0 + 2), (-1, RETAIL, T0 + 5)]),
    ]
    changes = preaggregate(outputs, MINUTE)
    assert changes == {
        TECH: CellChange(2, {(T0, 0): [2, 0], (T0 + MINUTE, 0): [0, 1], (T0, 3): [1, 0]}),
        RETAIL: CellChange(0, {(T0, 0): [1, 0], (T0, 3): [0, 1]}),
    }


def test_counter_returns_absolute_count_and_touched_windows() -> None:
    counter = CellCounter()
    first = counter.apply(TECH, [CellChange(2, {(T0, 0): [2, 0]})], MINUTE)
    assert (first.count, first.windows, first.late) == (2, {T0: (2, 0)}, {})
    second = counter.apply(
        TECH,
        [CellChange(-1, {(T0, 1): [0, 1]}), CellChange(1, {(T0 + MINUTE, 0): [1, 0]})],
        MINUTE,
    )
    assert second.count == 2
    assert second.windows == {T0: (2, 1), T0 + MINUTE: (1, 0)}


def test_late_delta_inside_retention_updates_its_window() -> None:
    counter = CellCounter()
    counter.apply(TECH, [CellChange(1, {(T0 + 10 * MINUTE, 0): [1, 0]})], MINUTE, 30 * MINUTE)
    update = counter.apply(TECH, [CellChange(1, {(T0, 2): [1, 0]})], MINUTE, 30 * MINUTE)
    assert update.windows == {T0: (1, 0)}
    assert update.late == {}
    assert update.count == 2


def test_delta_older_than_retention_is_counted_late_never_dropped() -> None:
    counter = CellCounter()
    retention = 5 * MINUTE
    counter.apply(TECH, [CellChange(1, {(T0, 0): [1, 0]})], MINUTE, retention)
    newer = counter.apply(TECH, [CellChange(1, {(T0 + 10 * MINUTE, 0): [1, 0]})], MINUTE, retention)
    assert T0 not in counter.windows  # evicted: past the retention of the newest window
    assert newer.count == 2
    late = counter.apply(
        TECH,
        [CellChange(-1, {(T0 + MINUTE, 4): [0, 1], (T0 + 9 * MINUTE, 4): [0, 1]})],
        MINUTE,
        retention,
    )
    assert late.count == 1  # the open-offer count is never windowed
    assert late.late == {4: 1}  # the delta of the evicted window, attributed to partition 4
    assert late.windows == {T0 + 9 * MINUTE: (0, 1)}


def test_counter_snapshot_restores_the_same_state() -> None:
    counter = CellCounter()
    counter.apply(TECH, [CellChange(3, {(T0, 0): [3, 0]})], MINUTE)
    restored = CellCounter.restore(counter.snapshot())
    assert restored == counter
    assert CellCounter.restore(None) == CellCounter()


def test_current_is_the_whole_absolute_state_for_a_view_refresh() -> None:
    from jobpulse.dataflows.items import CellUpdate

    counter = CellCounter()
    counter.apply(TECH, [CellChange(2, {(T0, 0): [2, 0]})], MINUTE)
    counter.apply(TECH, [CellChange(-1, {(T0 + MINUTE, 1): [0, 1]})], MINUTE)
    assert counter.current(TECH) == CellUpdate(TECH, 1, {T0: (2, 0), T0 + MINUTE: (0, 1)}, {})
