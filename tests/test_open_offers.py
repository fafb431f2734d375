"""Per-offer state transitions (new, identical re-send, move, delete, delete of unknown), the
ordering rule across partitions, tombstones, and independence from arrival interleaving.

Each test runs twice: on a fresh state (everything in the overlay) and on one whose every
batch is flushed into the compact runs right away (``compact``), so every transition is also
checked against entries read back from the runs."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest

from jobpulse.dataflows import open_offers
from jobpulse.dataflows.items import DELETE, REJECTED, UPSERT, Record
from jobpulse.dataflows.open_offers import SHARDS, ShardState, offer_key, shard_of
from jobpulse.delta import Cell

TECH_EU = Cell("Tech", "Europe")
TECH_ASIA = Cell("Tech", "Asia")
RETAIL_EU = Cell("Retail", "Europe")
T = 1_764_000_000_000
HOUR = 3_600_000


@pytest.fixture(autouse=True, params=["overlay", "compact"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``compact``: every batch ends flushed into the runs (the overlay never holds more)."""
    if request.param == "compact":
        monkeypatch.setattr(open_offers, "OVERLAY_MAX", 1)
    return str(request.param)


def upsert(
    offset: int, offer_id: str, cell: Cell, partition: int = 0, at: int | None = None
) -> Record:
    order = T + offset if at is None else at
    return (partition, offset, order, order, offer_id, UPSERT, cell, _key(offer_id))


def delete(offset: int, offer_id: str, partition: int = 0, at: int | None = None) -> Record:
    order = T + offset if at is None else at
    return (partition, offset, order, order, offer_id, DELETE, None, _key(offer_id))


def rejected(offset: int, partition: int = 0) -> Record:
    return (partition, offset, T + offset, T + offset, None, REJECTED, None, 0)


def apply(
    state: ShardState, records: list[Record], tombstone_ms: int = HOUR, partitions: int = 1
) -> list:
    deltas, _ = state.apply(records, tombstone_ms, partitions)
    return deltas


#: Every offer id a test built a record for: the state keeps hashes, this maps them back.
IDS: dict[int, str] = {}


def _key(offer_id: str) -> int:
    key = offer_key(offer_id.encode())
    IDS[key] = offer_id
    return key


def open_cells(state: ShardState) -> dict[str, Cell]:
    return {IDS[key]: state.cell_of(IDS[key]) for key in state.open_keys()}  # type: ignore[misc]


def test_new_offer_is_one_increment() -> None:
    state = ShardState()
    assert apply(state, [upsert(0, "a", TECH_EU)]) == [(1, TECH_EU, "a", 0, 0, 0, T)]
    assert open_cells(state) == {"a": TECH_EU}


def test_identical_resend_changes_nothing() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU)])
    assert apply(state, [upsert(1, "a", Cell("Tech", "Europe"))]) == []
    assert open_cells(state) == {"a": TECH_EU}


def test_move_is_decrement_of_old_then_increment_of_new() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU)])
    assert apply(state, [upsert(5, "a", TECH_ASIA)]) == [
        (-1, TECH_EU, "a", 0, 5, 0, T + 5),
        (1, TECH_ASIA, "a", 0, 5, 1, T + 5),
    ]
    assert apply(state, [upsert(6, "a", RETAIL_EU)]) == [
        (-1, TECH_ASIA, "a", 0, 6, 0, T + 6),
        (1, RETAIL_EU, "a", 0, 6, 1, T + 6),
    ]
    assert open_cells(state) == {"a": RETAIL_EU}


def test_delete_of_an_open_offer_is_one_decrement_and_it_can_reopen() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU)])
    assert apply(state, [delete(1, "a")]) == [(-1, TECH_EU, "a", 0, 1, 0, T + 1)]
    assert state.open_keys() == []
    assert apply(state, [upsert(2, "a", TECH_EU)]) == [(1, TECH_EU, "a", 0, 2, 0, T + 2)]


def test_delete_of_an_unknown_offer_is_only_counted() -> None:
    state = ShardState()
    deltas, counts = state.apply([delete(0, "ghost"), delete(1, "ghost")], HOUR)
    assert deltas == []
    assert counts[0].unknown_deletes == 2


def test_counts_are_records_rejects_and_next_offset_per_partition() -> None:
    state = ShardState()
    _, counts = state.apply(
        [upsert(10, "a", TECH_EU), rejected(11), delete(12, "b"), rejected(13), rejected(4, 2)],
        HOUR,
    )
    zero = counts[0]
    assert (zero.offset, zero.records, zero.dlq, zero.unknown_deletes) == (14, 4, 2, 1)
    two = counts[2]
    assert (two.offset, two.records, two.dlq) == (5, 1, 1)


def test_records_already_applied_are_skipped_on_replay() -> None:
    state = ShardState()
    batch = [upsert(0, "a", TECH_EU), upsert(1, "b", TECH_EU), delete(2, "a")]
    assert len(apply(state, batch)) == 3
    deltas, counts = state.apply(batch, HOUR)
    assert deltas == [] and counts == {}
    assert open_cells(state) == {"b": TECH_EU}


def test_snapshot_is_a_copy_and_restores_the_same_state() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU), upsert(1, "b", TECH_ASIA), rejected(2)])
    snapshot = state.snapshot()
    apply(state, [delete(3, "a")])
    restored = ShardState.restore(pickle.loads(pickle.dumps(snapshot)))
    assert open_cells(restored) == {"a": TECH_EU, "b": TECH_ASIA}
    assert restored.partitions[0][0] == 3
    # Replaying the record after the snapshot gives the same delta again (same event id).
    assert apply(restored, [delete(3, "a")]) == [(-1, TECH_EU, "a", 0, 3, 0, T + 3)]
    assert ShardState.restore(None).entries() == {}


def test_shards_are_stable_and_spread() -> None:
    shards = [shard_of(f"syn-7-{n}".encode()) for n in range(10_000)]
    assert shards == [shard_of(f"syn-7-{n}".encode()) for n in range(10_000)]
    assert set(shards) == set(range(SHARDS))
    assert shard_of(None) == shard_of(b"") == 0


# -- the ordering rule across partitions ---------------------------------------------------


def test_an_older_record_from_another_partition_is_stale() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU, partition=3, at=T + 1000)])
    deltas, counts = state.apply([upsert(0, "a", TECH_ASIA, partition=7, at=T + 999)], HOUR)
    assert deltas == [] and counts[7].stale == 1
    assert open_cells(state) == {"a": TECH_EU}
    # A newer one from the other partition moves it.
    assert apply(state, [upsert(1, "a", TECH_ASIA, partition=7, at=T + 1001)]) == [
        (-1, TECH_EU, "a", 7, 1, 0, T + 1001),
        (1, TECH_ASIA, "a", 7, 1, 1, T + 1001),
    ]


def test_within_one_partition_offset_order_wins_at_equal_time() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU, at=T), upsert(1, "a", TECH_ASIA, at=T)])
    assert open_cells(state) == {"a": TECH_ASIA}
    apply(state, [delete(2, "a", at=T)])
    assert state.open_keys() == []


def test_equal_time_across_partitions_the_higher_partition_wins_in_any_order() -> None:
    first, second = ShardState(), ShardState()
    low, high = (
        upsert(0, "a", TECH_EU, partition=1, at=T),
        upsert(0, "a", RETAIL_EU, partition=2, at=T),
    )
    apply(first, [low, high])
    apply(second, [high, low])
    assert open_cells(first) == open_cells(second) == {"a": RETAIL_EU}


def test_a_stale_upsert_after_a_delete_does_not_reopen() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU, partition=0, at=T)])
    apply(state, [delete(0, "a", partition=5, at=T + 2000)])
    deltas, counts = state.apply([upsert(1, "a", TECH_EU, partition=0, at=T + 1000)], HOUR)
    assert deltas == [] and counts[0].stale == 1
    assert state.open_keys() == [] and state.tombstone_of(_key("a")) is not None
    # A newer upsert re-opens it and drops the tombstone.
    assert apply(state, [upsert(2, "a", TECH_EU, partition=0, at=T + 3000)]) == [
        (1, TECH_EU, "a", 0, 2, 0, T + 3000)
    ]
    assert state.tombstone_of(_key("a")) is None


def test_a_delete_arriving_before_its_older_upsert_wins() -> None:
    """Keyless records: the delete (newer) is read first from another partition."""
    state = ShardState()
    _, counts = state.apply([delete(0, "a", partition=4, at=T + 5000)], HOUR)
    assert counts[4].unknown_deletes == 1
    deltas, counts = state.apply([upsert(0, "a", TECH_EU, partition=2, at=T)], HOUR)
    assert deltas == [] and counts[2].stale == 1 and state.open_keys() == []


def test_tombstones_expire_only_when_every_partition_is_past_them() -> None:
    state = ShardState()
    two = {"partitions": 2}
    apply(state, [upsert(0, "a", TECH_EU, 0, T), delete(1, "a", 0, T)], **two)
    # Partition 1 has delivered nothing: however far partition 0 goes, the tombstone stays.
    apply(state, [upsert(2, "x", TECH_EU, partition=0, at=T + 5 * HOUR)], **two)
    assert state.tombstone_of(_key("a")) is not None
    # Partition 1 is still an hour behind: a stale upsert from it must still find the tombstone.
    apply(state, [upsert(0, "y", TECH_EU, partition=1, at=T + HOUR - 1)], **two)
    assert state.tombstone_of(_key("a")) is not None
    apply(state, [upsert(1, "y", TECH_EU, partition=1, at=T + 2 * HOUR)], **two)
    assert state.tombstone_of(_key("a")) is None
    # A partition seen only later (the topic grew) holds expiry back as well.
    apply(state, [delete(3, "x", partition=0, at=T + 6 * HOUR)], **two)
    apply(state, [upsert(0, "z", TECH_EU, partition=3, at=T + 6 * HOUR)], **two)
    apply(state, [upsert(2, "y", TECH_EU, partition=1, at=T + 9 * HOUR)], **two)
    apply(state, [upsert(4, "y", TECH_EU, partition=0, at=T + 9 * HOUR)], **two)
    assert state.tombstone_of(_key("x")) is not None  # partition 2 has delivered nothing


def test_zero_tombstone_time_still_never_reopens_from_a_slower_partition() -> None:
    state = ShardState()
    apply(state, [upsert(0, "a", TECH_EU, partition=1, at=T)], tombstone_ms=0)
    apply(state, [delete(0, "a", partition=0, at=T + 10)], tombstone_ms=0)
    # Partition 1 is behind the tombstone: it is kept for it.
    assert apply(state, [upsert(1, "a", TECH_EU, partition=1, at=T + 5)], tombstone_ms=0) == []


def _final(records_by_partition: dict[int, list[Record]], seed: int) -> dict[str, Cell]:
    """Apply the partitions' records in one random interleaving (each partition in order)."""
    rng = random.Random(seed)
    queues = {p: list(records) for p, records in records_by_partition.items()}
    state = ShardState()
    while any(queues.values()):
        p = rng.choice([p for p, q in queues.items() if q])
        take = rng.randint(1, 4)
        batch, queues[p] = queues[p][:take], queues[p][take:]
        apply(state, batch, tombstone_ms=50)
    return open_cells(state)


def test_the_final_state_does_not_depend_on_the_interleaving() -> None:
    """The same records, read in 30 different interleavings of their partitions, always end
    in the same state, and it is the one the ordering rule defines (newest version wins)."""
    rng = random.Random(7)
    cells = [TECH_EU, TECH_ASIA, RETAIL_EU]
    by_partition: dict[int, list[Record]] = {p: [] for p in range(4)}
    clocks = dict.fromkeys(range(4), T)
    newest: dict[str, tuple[int, int, int, bool, Cell | None]] = {}
    for _ in range(400):
        p = rng.randrange(4)
        clocks[p] += rng.randint(0, 30)  # non-decreasing per partition, ties included
        offer_id = f"o{rng.randrange(25)}"
        offset = len(by_partition[p])
        is_delete = rng.random() < 0.3
        cell = None if is_delete else rng.choice(cells)
        record = (
            delete(offset, offer_id, p, clocks[p])
            if is_delete
            else upsert(offset, offer_id, cell, p, clocks[p])  # type: ignore[arg-type]
        )
        by_partition[p].append(record)
        version = (clocks[p], p, offset)
        if offer_id not in newest or version > newest[offer_id][:3]:
            newest[offer_id] = (*version, is_delete, cell)
    truth = {k: v[4] for k, v in newest.items() if not v[3]}
    results = [_final(by_partition, seed) for seed in range(30)]
    assert all(result == truth for result in results)
    assert len(truth) > 5


def test_every_interleaving_of_a_small_history_agrees() -> None:
    history = {
        0: [upsert(0, "a", TECH_EU, 0, T), delete(1, "a", 0, T + 20)],
        1: [upsert(0, "a", TECH_ASIA, 1, T + 10), upsert(1, "a", RETAIL_EU, 1, T + 30)],
        2: [delete(0, "a", 2, T + 25)],
    }
    records = [(p, i) for p, rs in history.items() for i in range(len(rs))]
    outcomes = set()
    for order in itertools.permutations(records):
        positions = dict.fromkeys(history, 0)
        state = ShardState()
        valid = True
        for p, i in order:
            if positions[p] != i:
                valid = False
                break
            positions[p] += 1
            apply(state, [history[p][i]])
        if valid:
            outcomes.add(tuple(sorted(open_cells(state).items())))
    assert outcomes == {(("a", RETAIL_EU),)}


@pytest.mark.parametrize(
    ("offer_id", "key"),
    [
        (b"syn-7-1", 230239941474273700596014196703602229764),
        ("offre-é".encode(), 195542318412536800373879240620476018189),
    ],
)
def test_the_offer_key_is_the_ids_blake2b_128_forever(offer_id: bytes, key: int) -> None:
    """Recovery stores hold these keys (and the shards they pick): they must never change."""
    import hashlib

    assert offer_key(offer_id) == key
    assert key == int.from_bytes(hashlib.blake2b(offer_id, digest_size=16).digest(), "little")
    assert shard_of(offer_id) == key % SHARDS
    assert offer_key(offer_id, bits=8) == key & 0xFF
