"""Dataflow throughput (100k offers, 1 worker) and per-offer state size.

    python -m benchmarks.throughput [--offers 100000] [--workers 1] [--skip-run]

1. Produces ``--offers`` synthetic records (70% new offers, 15% re-sends or moves, 15%
   deletes, random coordinates, 8 categories) to throw-away topics, runs
   ``jobpulse run --once`` in a subprocess and prints records/s — as measured by the run
   itself (from its first poll to the end, the summary line) and end to end (process start,
   imports, k-d tree load and recovery store included) — then checks ``jobpulse verify``.
2. Measures the per-offer state: bytes per open offer in memory (tracemalloc), now and with
   the plain-dict state it replaced, and in a snapshot without run files (pickle), for two id
   shapes; and, for comparison, the Python-side cost of the rejected "one Bytewax key per
   offer" layout. The state at 10k … 25M offers: ``python -m benchmarks.scale``.

Prints numbers; asserts nothing. Needs the local stack for part 1 (``jobpulse stack up``).
"""

from __future__ import annotations

import argparse
import gc
import pickle
import random
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from jobpulse import settings as settings_module
from jobpulse.dataflows.items import DELETE, UPSERT, Record
from jobpulse.dataflows.open_offers import SHARDS, ShardState, offer_key
from jobpulse.dataflows.reference_state import ReferenceShardState
from jobpulse.delta import Cell
from jobpulse.settings import Settings

CATEGORIES = [
    "Tech",
    "Business",
    "Marketing / Comm'",
    "Retail",
    "Admin",
    "Créa",
    "Conseil",
    "Sales",
]


def synthetic_records(count: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """(key, value) records: new offers, re-sends/moves of open ones, deletes."""
    rng = random.Random(seed)
    open_ids: list[str] = []
    records: list[tuple[bytes, bytes]] = []
    for n in range(count):
        roll = rng.random()
        if open_ids and roll < 0.15:
            offer_id = open_ids.pop(rng.randrange(len(open_ids)))
            records.append((offer_id.encode(), orjson.dumps({"id": offer_id, "op": "delete"})))
            continue
        if open_ids and roll < 0.30:
            offer_id = rng.choice(open_ids)
        else:
            offer_id = f"bench-{n}"
            open_ids.append(offer_id)
        body = {
            "id": offer_id,
            "category": rng.choice(CATEGORIES),
            "latitude": round(rng.uniform(-55, 70), 5),
            "longitude": round(rng.uniform(-180, 180), 5),
            "contract_type": "FULL_TIME",
            "name": f"Offer {n}",
        }
        records.append((offer_id.encode(), orjson.dumps(body)))
    return records


def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    from jobpulse import kafka

    producer = kafka.producer(settings, tunables={"linger.ms": 20, "compression.type": "lz4"})
    began = time.monotonic()
    for i, (key, value) in enumerate(records):
        kafka.produce(producer, settings.offers_topic, value, key)
        if i % 5000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise SystemExit("could not deliver the benchmark records")
    return time.monotonic() - began


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = settings_module.child_env(settings)
    return subprocess.run(
        [sys.executable, "-m", "jobpulse", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def run_benchmark(offers: int, workers: int) -> None:
    from jobpulse import topics
    from jobpulse.store import Store

    tag = f"bench-{uuid.uuid4().hex[:8]}"
    base = settings_module.load()
    with tempfile.TemporaryDirectory() as state_dir:
        settings = base.with_overrides(
            offers_topic=f"{tag}.offers",
            deltas_topic=f"{tag}.deltas",
            dlq_topic=f"{tag}.dlq",
            redis_prefix=tag,
            state_dir=Path(state_dir),
        )
        topics.ensure_topics(settings)
        try:
            records = synthetic_records(offers)
            seconds = produce(settings, records)
            print(f"produced {len(records)} records in {seconds:.1f}s")
            began = time.monotonic()
            result = _cli(settings, "run", "--once", "--workers", str(workers))
            wall = time.monotonic() - began
            if result.returncode != 0:
                raise SystemExit(f"run failed: {result.stderr.strip().splitlines()[-1:]}")
            summary = re.search(r"processed (\d+) records in ([\d.]+)s", result.stderr)
            if summary:
                n, s = int(summary.group(1)), float(summary.group(2))
                rate = n / s
                print(f"run --once, {workers} worker(s): {n} records in {s:.2f}s = {rate:,.0f}/s")
            rate = len(records) / wall
            print(f"end to end (process start to exit): {wall:.2f}s = {rate:,.0f} records/s")
            verify = _cli(settings, "verify")
            said = verify.stdout.strip() or verify.stderr.strip()
            print(f"verify: exit {verify.returncode}: {said}")
            print(f"open offers: {Store.connect(settings).breakdown().total}")
        finally:
            topics.delete_topics(settings, topics.project_topics(settings))
            Store.connect(settings).clear()


def _measure(build: Callable[[], object], count: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / count


def _filled_shard(
    make_id: Callable[[int], str],
    count: int,
    cells: list[Cell],
    kind: type[ShardState] | type[ReferenceShardState] = ShardState,
) -> ShardState | ReferenceShardState:
    """A shard holding ``count`` open offers, filled through ``apply`` (real packed values);
    ``kind``: the compact state (now) or the plain-dict model it replaced (before)."""
    t0 = 1_764_000_000_000
    state = kind()
    step = 100_000
    for start in range(0, count, step):
        records: list[Record] = [
            (n % 12, n, t0 + n, t0 + n, i, UPSERT, cells[n % len(cells)], offer_key(i.encode()))
            for n in range(start, min(count, start + step))
            for i in (make_id(n),)
        ]
        state.apply(records, tombstone_ms=3_600_000, partition_count=12)
    return state


def state_size(count: int) -> None:
    cells = [Cell(c, k) for c in CATEGORIES for k in ("Europe", "Asia", "Africa", "Oceania")]
    shapes = {
        "syn-42-<n> ids (~12 chars)": lambda n: f"syn-42-{n}",
        "wttj-<16 hex>-1 ids (23 chars)": lambda n: f"wttj-{n:016x}-1",
    }
    for label, make_id in shapes.items():

        def build(make_id: Callable[[int], str] = make_id) -> ShardState:
            return _filled_shard(make_id, count, cells)

        per_offer = _measure(build, count)

        def before(make_id: Callable[[int], str] = make_id) -> object:
            return _filled_shard(make_id, count, cells, ReferenceShardState)

        print(
            f"state before (plain dicts, {label}): "
            f"{_measure(before, count):.0f} bytes/open offer in memory"
        )
        state = build()
        began = time.perf_counter()
        snapshot = pickle.dumps(state.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)
        snap_s = time.perf_counter() - began
        print(
            f"state, {label}: {per_offer:.0f} bytes/open offer in memory, "
            f"{len(snapshot) / count:.0f} bytes/offer in a snapshot "
            f"({count} offers: snapshot + pickle {snap_s * 1000:.0f} ms)"
        )

        def closed(make_id: Callable[[int], str] = make_id) -> ShardState:
            """Only tombstones: deletes of offers the shard does not hold."""
            t0, state = 1_764_000_000_000, ShardState()
            for start in range(0, count, 100_000):
                deletes: list[Record] = [
                    (n % 12, n, t0 + n, t0 + n, i, DELETE, None, offer_key(i.encode()))
                    for n in range(start, min(count, start + 100_000))
                    for i in (make_id(n),)
                ]
                state.apply(deletes, tombstone_ms=3_600_000, partition_count=12)
            return state

        print(f"tombstones, {label}: {_measure(closed, count):.0f} bytes per closed offer kept")

    snapshot_per_epoch(count)

    from bytewax.operators import StatefulBatchLogic

    class OneOfferLogic(StatefulBatchLogic[object, object, object]):
        __slots__ = ("cell",)

        def __init__(self, cell: Cell) -> None:
            self.cell = cell

        def on_batch(self, values: list[object]) -> tuple[list[object], bool]:
            return [], False

        def snapshot(self) -> object:
            return self.cell

    per_key = _measure(
        lambda: {f"syn-42-{n}": OneOfferLogic(cells[n % len(cells)]) for n in range(count)},
        count,
    )
    print(
        f"rejected layout, one Bytewax key per offer: {per_key:.0f} bytes/offer for the Python "
        "objects alone (plus the Rust-side key map and one recovery row per changed offer)"
    )


def snapshot_per_epoch(count: int) -> None:
    """Bytes a snapshot epoch writes with ``updates`` offers changing among ``count``.

    Before the compact layout, Bytewax pickled every touched shard whole (``count / 256``
    offers each); now a touched shard writes only its changed entries (inline below
    ``FLUSH_AT``, else as a new run file) plus its amortised merges: docs/scale.md.
    """
    cells = [Cell("Tech", "Europe")]
    sample = _filled_shard(lambda n: f"syn-42-{n}", 50_000, cells, ReferenceShardState)
    per_offer = len(pickle.dumps(sample.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)) / 50_000
    rng = random.Random(3)
    for updates in (100, 10_000):
        touched = len({rng.randrange(SHARDS) for _ in range(updates)})
        before = touched * (count / SHARDS) * per_offer / 1e6
        print(
            f"snapshot per epoch, {count} open offers, {updates} changed: before (whole "
            f"shards pickled) {before:,.1f} MB; now ~{updates * 40 / 1e6:,.2f} MB "
            "(the changed entries; measured by python -m benchmarks.scale)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput")
    parser.add_argument("--offers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--state-offers", type=int, default=1_000_000)
    parser.add_argument("--skip-run", action="store_true", help="only measure the state size")
    args = parser.parse_args()
    if not args.skip_run:
        run_benchmark(args.offers, args.workers)
    state_size(args.state_offers)


if __name__ == "__main__":
    main()
