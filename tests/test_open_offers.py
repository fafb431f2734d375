"""Per-offer state transitions: new, identical re-send, move, delete, delete of unknown."""

from __future__ import annotations

import pickle

from jobpulse.dataflows.items import DELETE, REJECTED, UPSERT, Record
from jobpulse.dataflows.open_offers import PartitionState
from jobpulse.delta import Cell

TECH_EU = Cell("Tech", "Europe")
TECH_ASIA = Cell("Tech", "Asia")
RETAIL_EU = Cell("Retail", "Europe")
T = 1_764_000_000_000


def upsert(offset: int, offer_id: str, cell: Cell) -> Record:
    return (offset, T + offset, offer_id, UPSERT, cell)


def delete(offset: int, offer_id: str) -> Record:
    return (offset, T + offset, offer_id, DELETE, None)


def rejected(offset: int) -> Record:
    return (offset, T + offset, None, REJECTED, None)


def test_new_offer_is_one_increment() -> None:
    state = PartitionState()
    assert state.apply([upsert(0, "a", TECH_EU)]) == [(1, TECH_EU, "a", 0, 0, T)]
    assert state.open == {"a": TECH_EU}


def test_identical_resend_changes_nothing() -> None:
    state = PartitionState()
    state.apply([upsert(0, "a", TECH_EU)])
    assert state.apply([upsert(1, "a", Cell("Tech", "Europe"))]) == []
    assert state.open == {"a": TECH_EU}


def test_move_is_decrement_of_old_then_increment_of_new() -> None:
    state = PartitionState()
    state.apply([upsert(0, "a", TECH_EU)])
    assert state.apply([upsert(5, "a", TECH_ASIA)]) == [
        (-1, TECH_EU, "a", 5, 0, T + 5),
        (1, TECH_ASIA, "a", 5, 1, T + 5),
    ]
    assert state.apply([upsert(6, "a", RETAIL_EU)]) == [
        (-1, TECH_ASIA, "a", 6, 0, T + 6),
        (1, RETAIL_EU, "a", 6, 1, T + 6),
    ]
    assert state.open == {"a": RETAIL_EU}


def test_delete_of_an_open_offer_is_one_decrement_and_it_can_reopen() -> None:
    state = PartitionState()
    state.apply([upsert(0, "a", TECH_EU)])
    assert state.apply([delete(1, "a")]) == [(-1, TECH_EU, "a", 1, 0, T + 1)]
    assert state.open == {}
    assert state.apply([upsert(2, "a", TECH_EU)]) == [(1, TECH_EU, "a", 2, 0, T + 2)]


def test_delete_of_an_unknown_offer_is_only_counted() -> None:
    state = PartitionState()
    assert state.apply([delete(0, "ghost"), delete(1, "ghost")]) == []
    assert state.unknown_deletes == 2


def test_progress_counts_records_rejects_and_next_offset() -> None:
    state = PartitionState()
    state.apply([upsert(10, "a", TECH_EU), rejected(11), delete(12, "b"), rejected(13)])
    progress = state.progress(late=3)
    assert (progress.offset, progress.records, progress.dlq) == (14, 4, 2)
    assert (progress.unknown_deletes, progress.late) == (1, 3)


def test_records_already_applied_are_skipped_on_replay() -> None:
    state = PartitionState()
    batch = [upsert(0, "a", TECH_EU), upsert(1, "b", TECH_EU), delete(2, "a")]
    first = state.apply(batch)
    assert len(first) == 3
    assert state.apply(batch) == []
    assert state.records == 3
    assert state.open == {"b": TECH_EU}


def test_snapshot_is_a_copy_and_restores_the_same_state() -> None:
    state = PartitionState()
    state.apply([upsert(0, "a", TECH_EU), upsert(1, "b", TECH_ASIA), rejected(2)])
    snapshot = state.snapshot()
    state.apply([delete(3, "a")])
    restored = PartitionState.restore(pickle.loads(pickle.dumps(snapshot)))
    assert restored.open == {"a": TECH_EU, "b": TECH_ASIA}
    assert (restored.offset, restored.records, restored.dlq) == (3, 3, 1)
    # Replaying the record after the snapshot gives the same delta again (same event id).
    assert restored.apply([delete(3, "a")]) == [(-1, TECH_EU, "a", 3, 0, T + 3)]
    assert PartitionState.restore(None) == PartitionState()


def test_buckets_are_stable_and_spread() -> None:
    from jobpulse.dataflows.open_offers import BUCKETS_PER_PARTITION, bucket_of

    buckets = [bucket_of(f"syn-7-{n}".encode()) for n in range(10_000)]
    assert buckets == [bucket_of(f"syn-7-{n}".encode()) for n in range(10_000)]
    assert set(buckets) == set(range(BUCKETS_PER_PARTITION))
    assert bucket_of(None) == bucket_of(b"") == 0
