"""The compact per-offer state against the plain-dict model it replaces.

Seeded random operation sequences — upserts, identical re-sends, moves, deletes of open and
unknown offers, stale records across partitions, replays of applied records, rejected
records, tombstone expiry — go through :class:`ShardState` (with flushes, merges and
snapshot → restore round trips, in memory and through run files, at random points) and
through :class:`ReferenceShardState`; every batch must give the same deltas and counters, and
the states the same entries. Once more with the key shrunk to a few bits (collisions), and
with keys sharing their 64 high bits (the searches' slow paths).
"""

from __future__ import annotations

import os
import pickle
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobpulse.dataflows import compact_state, open_offers
from jobpulse.dataflows.compact_state import TOMBSTONE
from jobpulse.dataflows.items import DELETE, REJECTED, UPSERT, Record
from jobpulse.dataflows.open_offers import ShardState, offer_key
from jobpulse.dataflows.reference_state import ReferenceShardState
from jobpulse.delta import Cell

T = 1_764_000_000_000
CELLS = [Cell("Tech", "Europe"), Cell("Tech", "Asia"), Cell("Retail", "Europe"), Cell("Admin", "")]
PARTITIONS = 3
TOMBSTONE_MS = 40


def model_entries(model: ReferenceShardState) -> dict[int, int]:
    """The model's ``open`` and ``closed`` in the compact state's packing."""
    entries = dict(model.open)
    entries.update({key: (version << 32) | TOMBSTONE for key, version in model.closed.items()})
    return entries


def random_history(rng: random.Random, count: int, key: Callable[[str], int]) -> list[Record]:
    """Records of up to PARTITIONS partitions, each partition's in offset order with a
    non-decreasing order time; partitions drift apart (stale records, tombstone expiry)."""
    ids = [f"offer-{n}" for n in range(rng.randint(5, 80))]
    clocks = [T + rng.randint(0, 30) for _ in range(PARTITIONS)]
    offsets = [0] * PARTITIONS
    records: list[Record] = []
    for _ in range(count):
        p = rng.randrange(PARTITIONS)
        clocks[p] += rng.choice([0, 0, 1, 2, 5, 15, 60])
        offset, offsets[p] = offsets[p], offsets[p] + 1
        roll = rng.random()
        if roll < 0.03:
            records.append((p, offset, clocks[p], clocks[p], None, REJECTED, None, 0))
            continue
        offer_id = rng.choice(ids)
        if roll < 0.3:
            records.append((p, offset, clocks[p], clocks[p], offer_id, DELETE, None, key(offer_id)))
        else:
            cell = rng.choice(CELLS)
            records.append((p, offset, clocks[p], clocks[p], offer_id, UPSERT, cell, key(offer_id)))
    return records


def batches(rng: random.Random, records: list[Record]) -> list[list[Record]]:
    """Consecutive batches; some are replayed (records already applied must be skipped)."""
    out, i = [], 0
    while i < len(records):
        size = rng.randint(1, 12)
        out.append(records[i : i + size])
        if rng.random() < 0.05 and i:
            out.append(records[max(0, i - rng.randint(1, 10)) : i + size])
        i += size
    return out


def round_trip(state: ShardState, root: Path | None) -> ShardState:
    return ShardState.restore(pickle.loads(pickle.dumps(state.snapshot())), root)


def check_history(seed: int, key: Callable[[str], int], root: Path | None) -> None:
    rng = random.Random(seed)
    history = random_history(rng, rng.randint(50, 600), key)
    state, model = ShardState(root), ReferenceShardState()
    state.bind(seed % 256)
    for batch in batches(rng, history):
        got = state.apply(batch, TOMBSTONE_MS, PARTITIONS)
        want = model.apply(batch, TOMBSTONE_MS, PARTITIONS)
        assert got == want, (seed, batch)
        assert state.tombstones == len(model.closed)
        roll = rng.random()
        if roll < 0.1:
            state._flush()
        elif roll < 0.2:
            state = round_trip(state, root)
    assert state.entries() == model_entries(model)
    assert state.swept_ms == model.swept_ms
    assert round_trip(state, root).entries() == model_entries(model)


@pytest.fixture(params=["memory", "files"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return tmp_path if request.param == "files" else None


@pytest.fixture(autouse=True)
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small thresholds: many flushes, runs and merges per history."""
    monkeypatch.setattr(open_offers, "FLUSH_AT", 4)
    monkeypatch.setattr(open_offers, "OVERLAY_MAX", 16)


def test_random_histories_match_the_dict_model(root: Path | None) -> None:
    for seed in range(60):
        check_history(seed, lambda offer_id: offer_key(offer_id.encode()), root)


def test_with_a_few_bit_key_collisions_behave_as_the_model_keyed_by_that_key(
    root: Path | None,
) -> None:
    """Offers sharing a key are one offer to the state — exactly as to a dict keyed by it."""
    for seed in range(30):
        check_history(seed, lambda offer_id: offer_key(offer_id.encode(), bits=3), root)


def test_keys_sharing_their_high_64_bits(root: Path | None) -> None:
    """Only 2 high bits: most keys share ``hi``, so every search takes its slow path."""
    for seed in range(30):
        check_history(seed, lambda offer_id: offer_key(offer_id.encode(), bits=66), root)


def test_a_collision_counts_two_offers_as_one() -> None:
    """What a key collision would do (≈ 1.5e-23 at 100 M offers): the second offer is taken
    for the first — a re-send or a move — so the two are counted once."""
    key = offer_key(b"a", bits=1)
    other = next(f"b{n}" for n in range(100) if offer_key(f"b{n}".encode(), bits=1) == key)
    state = ShardState()
    opened = [(0, 0, T, T, "a", UPSERT, CELLS[0], key)]
    deltas, _ = state.apply(opened, TOMBSTONE_MS)
    assert deltas == [(1, CELLS[0], "a", 0, 0, 0, T)]
    moved = [(0, 1, T + 1, T + 1, other, UPSERT, CELLS[1], key)]
    deltas, _ = state.apply(moved, TOMBSTONE_MS)
    assert [d[0] for d in deltas] == [-1, 1]  # a move, not a second open offer
    assert len(state.open_keys()) == 1


def test_a_snapshot_interrupted_while_writing_a_file_leaves_the_previous_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 in the middle of a snapshot: the temporary file never becomes a run, and the
    last committed snapshot resumes exactly (replaying what came after it)."""
    rng = random.Random(5)
    history = random_history(rng, 800, lambda offer_id: offer_key(offer_id.encode()))
    first, rest = history[:400], history[400:]
    state, model = ShardState(tmp_path), ReferenceShardState()
    state.bind(3)
    for batch in batches(rng, first):
        state.apply(batch, TOMBSTONE_MS, PARTITIONS)
        model.apply(batch, TOMBSTONE_MS, PARTITIONS)
    committed = pickle.dumps(state.snapshot())
    state.apply(rest[:200], TOMBSTONE_MS, PARTITIONS)

    def crash(*_: object) -> None:
        raise KeyboardInterrupt("killed while renaming")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        pickle.dumps(state.snapshot())  # (Bytewax pickles a snapshot to commit it)
    monkeypatch.undo()
    assert list((tmp_path / compact_state.STATE_DIR / "shard-003").glob(".*.tmp"))

    resumed = ShardState.restore(pickle.loads(committed), tmp_path)
    for batch in batches(rng, rest):
        assert resumed.apply(batch, TOMBSTONE_MS, PARTITIONS) == model.apply(
            batch, TOMBSTONE_MS, PARTITIONS
        )
    assert resumed.entries() == model_entries(model)


def test_a_snapshot_pickles_only_once_the_files_it_names_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are written on the pool once Bytewax pickles the snapshot (to commit it),
    which waits for them; a failed fsync fails the pickling, so the commit never happens."""
    rng = random.Random(11)
    history = random_history(rng, 600, lambda offer_id: offer_key(offer_id.encode()))
    state = ShardState(tmp_path)
    state.bind(1)
    for batch in batches(rng, history):
        state.apply(batch, TOMBSTONE_MS, PARTITIONS)
    release = threading.Event()
    write = compact_state._write_durably

    def held(*args: Any) -> None:
        release.wait(10)
        write(*args)

    monkeypatch.setattr(compact_state, "_write_durably", held)
    snapshot = state.snapshot()
    assert isinstance(snapshot, compact_state.Durable)
    shard_dir = tmp_path / compact_state.STATE_DIR / "shard-001"
    time.sleep(0.2)
    assert not shard_dir.exists()  # queued: written only once a snapshot is pickled
    pickled: list[bytes] = []
    pickling = threading.Thread(target=lambda: pickled.append(pickle.dumps(snapshot)))
    pickling.start()
    pickling.join(0.3)
    assert pickling.is_alive() and not pickled  # waits for the fsyncs
    assert not list(shard_dir.glob("run-*.bin"))  # not even written yet
    release.set()
    pickling.join(10)
    restored = pickle.loads(pickled[0])
    assert type(restored) is tuple
    assert {ref[0] for ref in restored[7]} == {p.name for p in shard_dir.glob("run-*.bin")}
    assert ShardState.restore(restored, tmp_path).entries() == state.entries()

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(compact_state, "_write_durably", write)
    monkeypatch.setattr(os, "fsync", failing)
    for batch in batches(rng, random_history(rng, 600, lambda i: offer_key(i.encode()))):
        state.apply(batch, TOMBSTONE_MS, PARTITIONS)
    with pytest.raises(OSError, match="Input/output error"):
        pickle.dumps(state.snapshot())


def test_merged_away_files_go_only_after_later_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last KEEP_SNAPSHOTS snapshots always find their files; older files are deleted."""
    monkeypatch.setattr(compact_state, "KEEP_SECONDS", 0.0)
    rng = random.Random(9)
    history = random_history(rng, 3000, lambda offer_id: offer_key(offer_id.encode()))
    state = ShardState(tmp_path)
    state.bind(0)
    snapshots: list[bytes] = []
    for batch in batches(rng, history):
        state.apply(batch, TOMBSTONE_MS, PARTITIONS)
        snapshots.append(pickle.dumps(state.snapshot()))
        for recent in snapshots[-compact_state.KEEP_SNAPSHOTS :]:
            restored = ShardState.restore(pickle.loads(recent), tmp_path)
            restored.entries()  # maps every file it names
    shard_dir = tmp_path / compact_state.STATE_DIR / "shard-000"
    last = pickle.loads(snapshots[-1])
    named, waiting = {ref[0] for ref in last[7]}, {name for name, _, _ in last[8]}
    assert {path.name for path in shard_dir.glob("run-*.bin")} == named | waiting
    assert len(snapshots) > 50 and len(waiting) < 4 * compact_state.KEEP_SNAPSHOTS
