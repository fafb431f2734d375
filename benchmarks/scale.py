"""The per-offer state at the design note's scale: 10k … 25M open offers on one process.

    python -m benchmarks.scale [--sizes 10000,1000000,10000000,25000000] [--skip-run]
                               [--skip-state] [--slice 300000]

Every offer stays open (no closes, re-sends or moves), so the state holds exactly the
offers ingested. Two parts, each growing one state through the sizes (a size's numbers are
taken when the state holds that many offers, then it grows to the next):

1. **State** (in process, no Kafka): 256 :class:`ShardState`\\ s fed the dataflow's way
   (batches of ~24 000 records regrouped per shard, a snapshot of every touched shard each
   250 000 records, run files in a temporary recovery directory). Per size: records/s of the
   next ``--slice`` new offers, RSS and its slope per offer between sizes, the run files'
   size, one epoch in which 1 % of the offers move (apply, then snapshot: seconds and bytes
   written), and a restart (restore the 256 snapshots, first batch, every shard touched).
2. **End to end** (``jobpulse run --once --workers 1`` against the local stack, one topic and
   one recovery store growing through the sizes; new offers that stay open, produced by a
   fast loop here, or with ``--synthetic-producer`` by ``jobpulse produce --synthetic
   --close-share 0 --resend-share 0 --move-share 0``, ~10x slower to produce). Per size: the
   in-process records/s of the next ``--slice`` offers, the run's peak RSS (``ru_maxrss``)
   and its slope, the recovery store's size, then 256 probe offers (one per shard) and a
   live ``jobpulse run`` on the same store: seconds from its start to the first probe
   counted, and to all 256 (every shard touched). The topics and Redis keys are deleted at
   the end.

Prints numbers; asserts nothing. docs/scale.md has the table and the arithmetic.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

from jobpulse import settings as settings_module
from jobpulse.dataflows.items import UPSERT, Record
from jobpulse.dataflows.open_offers import SHARDS, ShardState, offer_key, shard_of
from jobpulse.delta import Cell
from jobpulse.settings import Settings

DEFAULT_SIZES = "10000,1000000,10000000,25000000"
T0 = 1_764_000_000_000
TOMBSTONE_MS = 3_600_000
PARTITIONS = 12
#: Records per dataflow batch (one worker at full speed) and per snapshot epoch.
BATCH = 24_000
EPOCH = 250_000
CELLS = [
    Cell(c, k)
    for c in ("Tech", "Business", "Retail", "Admin", "Sales", "Conseil", "Créa", "Marketing")
    for k in ("Europe", "Asia", "Africa", "Oceania")
]


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- 1. the state in process -----------------------------------------------------------------


class StateBench:
    """256 shards fed like the dataflow feeds them, with run files in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shards = [ShardState(root) for _ in range(SHARDS)]
        for n, state in enumerate(self.shards):
            state.bind(n)
        self.count = 0  # offers ingested (all open)
        self.offsets = [0] * PARTITIONS
        self.clock = T0
        self.since_snapshot = 0
        #: shard → its last snapshot, pickled as Bytewax stores it (after its files are durable).
        self.snapshots: dict[int, bytes] = {}

    def _records(self, ids: Iterator[tuple[str, int]]) -> dict[int, list[Record]]:
        """One batch, regrouped by shard (``(offer id, cell index)`` pairs)."""
        by_shard: dict[int, list[Record]] = {}
        for offer_id, cell in ids:
            p = self.count % PARTITIONS
            self.count += 1
            offset, self.offsets[p] = self.offsets[p], self.offsets[p] + 1
            self.clock += 1
            key = offer_key(offer_id.encode())
            record = (p, offset, self.clock, self.clock, offer_id, UPSERT, CELLS[cell], key)
            by_shard.setdefault(key % SHARDS, []).append(record)
        return by_shard

    def ingest(self, ids: list[tuple[str, int]]) -> float:
        """Apply ``ids`` as new/moved offers in dataflow batches (snapshotting every epoch);
        return the seconds spent in the state (apply + snapshot), not building records."""
        spent = 0.0
        for start in range(0, len(ids), BATCH):
            batch = self._records(iter(ids[start : start + BATCH]))
            began = time.perf_counter()
            for shard, records in batch.items():
                self.shards[shard].apply(records, TOMBSTONE_MS, PARTITIONS)
            self.since_snapshot += len(ids[start : start + BATCH])
            if self.since_snapshot >= EPOCH:
                self.snapshot(batch)
            spent += time.perf_counter() - began
        return spent

    def snapshot(self, touched: dict[int, list[Record]] | None = None) -> float:
        began = time.perf_counter()
        # As Bytewax does: every snapshot of the epoch, then each pickled (its files written).
        shards = range(SHARDS) if touched is None else touched
        taken = {s: self.shards[s].snapshot() for s in shards}
        self.snapshots.update({s: pickle.dumps(snap, protocol=5) for s, snap in taken.items()})
        self.since_snapshot = 0
        return time.perf_counter() - began

    def grow(self, target: int) -> float:
        """New offers ``s-<n>`` up to ``target`` open offers, made one batch at a time."""
        spent = 0.0
        while self.count < target:
            n0 = self.count
            spent += self.ingest(
                [(f"s-{n}", n % len(CELLS)) for n in range(n0, min(target, n0 + BATCH))]
            )
        return spent

    def rss(self) -> int:
        gc.collect()
        return psutil.Process().memory_info().rss

    def epoch_of_moves(self, share: float) -> tuple[float, float, int]:
        """``share`` of the open offers move to another cell in one epoch: (apply seconds,
        snapshot seconds, bytes written: new run files + pickled snapshots)."""
        self.snapshot()  # the epoch before: what the ingest left unsnapshotted is not counted
        rng = random.Random(self.count)
        chosen = rng.sample(range(self.count), max(1, int(self.count * share)))
        files_before = set(self.root.rglob("run-*.bin"))
        ids = [(f"s-{n}", (n + 1 + rng.randrange(len(CELLS) - 1)) % len(CELLS)) for n in chosen]
        touched: dict[int, list[Record]] = {}
        apply_s = 0.0
        for start in range(0, len(ids), BATCH):
            batch = self._records(iter(ids[start : start + BATCH]))
            self.count -= len(ids[start : start + BATCH])  # moves, not new offers
            began = time.perf_counter()
            for shard, records in batch.items():
                self.shards[shard].apply(records, TOMBSTONE_MS, PARTITIONS)
            apply_s += time.perf_counter() - began
            touched.update(batch)
        began = time.perf_counter()
        taken = {shard: self.shards[shard].snapshot() for shard in touched}
        snapshots = {shard: pickle.dumps(snap, protocol=5) for shard, snap in taken.items()}
        snapshot_s = time.perf_counter() - began
        self.snapshots.update(snapshots)
        pickled = sum(len(s) for s in snapshots.values())
        new_files = set(self.root.rglob("run-*.bin")) - files_before
        return apply_s, snapshot_s, sum(p.stat().st_size for p in new_files) + pickled

    def restart(self) -> tuple[float, float, float]:
        """Restore every shard from its last snapshot (pickled, as Bytewax keeps it), then one
        new offer for one shard, then one for each other shard: seconds to restore, to the
        first batch's output, and until every shard was touched."""
        self.snapshot()
        stored = self.snapshots
        began = time.perf_counter()
        shards = [ShardState.restore(pickle.loads(stored[n]), self.root) for n in range(SHARDS)]
        restored = time.perf_counter() - began
        probes = _one_id_per_shard(f"probe-{self.count}")
        first = None
        for shard in range(SHARDS):
            p = self.count % PARTITIONS
            self.count += 1
            offset, self.offsets[p] = self.offsets[p], self.offsets[p] + 1
            self.clock += 1
            offer_id = probes[shard]
            key = offer_key(offer_id.encode())
            record = (p, offset, self.clock, self.clock, offer_id, UPSERT, CELLS[0], key)
            deltas, _ = shards[shard].apply([record], TOMBSTONE_MS, PARTITIONS)
            assert deltas, "the probe opened no offer"
            if first is None:
                first = time.perf_counter() - began
        every = time.perf_counter() - began
        self.shards = shards
        return restored, first or 0.0, every


def _one_id_per_shard(prefix: str) -> list[str]:
    """Offer ids ``<prefix>-<n>``, one per shard, indexed by shard."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < SHARDS:
        offer_id = f"{prefix}-{n}"
        found.setdefault(shard_of(offer_id.encode()), offer_id)
        n += 1
    return [found[s] for s in range(SHARDS)]


def state_benchmark(sizes: list[int], slice_: int) -> None:
    print("== 1. the state in process (256 shards, run files in a temporary directory)")
    root = Path(tempfile.mkdtemp(prefix="jobpulse-scale-"))
    try:
        bench = StateBench(root)
        previous: tuple[int, int] | None = None
        rates: dict[int, float] = {}
        for size in sizes:
            bench.grow(size)
            rss = bench.rss()
            seconds = bench.grow(size + slice_)  # the next size grows from here
            rates[size] = slice_ / seconds
            slope = ""
            if previous is not None:
                slope = f", {(rss - previous[1]) / (size - previous[0]):.1f} B/offer since"
            previous = (size, rss)
            apply_s, snap_s, written = bench.epoch_of_moves(0.01)
            restored, first, every = bench.restart()
            print(
                f"{size:>11,} offers: {rates[size]:,.0f} records/s (state only, next {slice_:,}); "
                f"RSS {_mb(rss)}{slope}; run files {_mb(_du(root))}; "
                f"epoch with 1 % moving: apply {apply_s:.2f}s, snapshot {snap_s:.2f}s, "
                f"{_mb(written)} written; restart: restore {restored * 1000:.0f} ms, "
                f"first output {first * 1000:.0f} ms, every shard {every * 1000:.0f} ms",
                flush=True,
            )
        first_size, last_size = sizes[0], sizes[-1]
        print(
            f"records/s at {last_size:,} vs at {first_size:,}: "
            f"{rates[last_size] / rates[first_size]:.0%}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- 2. end to end -----------------------------------------------------------------------------


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobpulse", *args],
        env=settings_module.child_env(settings),
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


#: (latitude, longitude) of places on every continent, for the fast producer.
PLACES = [(48.85, 2.35), (35.68, 139.69), (-33.87, 151.21), (30.04, 31.24), (40.71, -74.0)]


def _produce(settings: Settings, count: int, seed: int) -> None:
    """``count`` new offers ``scale-<seed>-<n>`` that stay open, as fast as librdkafka takes
    them (≈ 10× ``jobpulse produce --synthetic``, whose realistic offers cost ~50 µs each to
    make; the dataflow's work per record is the same: parse, geocode, one new offer)."""
    if count <= 0:
        return
    from jobpulse import kafka

    producer = kafka.producer(settings, tunables={"linger.ms": 50, "compression.type": "lz4"})
    categories = [cell.category for cell in CELLS[:: len(CELLS) // 8]]
    topic = settings.offers_topic
    for n in range(count):
        offer_id = f"scale-{seed}-{n}"
        lat, lon = PLACES[n % len(PLACES)]
        value = (
            f'{{"id":"{offer_id}","category":"{categories[n % len(categories)]}",'
            f'"latitude":{lat},"longitude":{lon}}}'
        ).encode()
        while True:
            try:
                producer.produce(topic, value, offer_id.encode())
                break
            except BufferError:
                producer.poll(0.05)
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise SystemExit("could not deliver the benchmark records")


def _produce_synthetic(settings: Settings, count: int, seed: int) -> None:
    """The same with ``jobpulse produce --synthetic`` (realistic offers; slower to make)."""
    if count <= 0:
        return
    result = _cli(
        settings,
        "produce",
        "--synthetic",
        "--count",
        str(count),
        "--seed",
        str(seed),
        "--close-share",
        "0",
        "--resend-share",
        "0",
        "--move-share",
        "0",
    )
    if result.returncode != 0:
        raise SystemExit(f"produce failed: {result.stderr.strip()[-500:]}")


def _run_once(settings: Settings, recovery: Path) -> tuple[float, int, float]:
    """``run --once``: (in-process records/s, peak RSS bytes, wall seconds)."""
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobpulse", "run", "--once", "--recovery-dir", str(recovery)],
        env=settings_module.child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - began
    if process.returncode != 0:
        raise SystemExit(f"run failed: {stderr.strip()[-800:]}")
    summary = re.search(r"processed (\d+) records in ([\d.]+)s", stderr)
    rate = int(summary.group(1)) / float(summary.group(2)) if summary else 0.0
    return rate, usage.ru_maxrss * 1024, wall


def _probe_restart(settings: Settings, recovery: Path, tag: str) -> tuple[float, float]:
    """256 new offers (one per shard) produced, then a live run on the store: seconds from
    its start to the first of them counted in Redis, and to all of them."""
    from jobpulse import kafka
    from jobpulse.offer import Offer
    from jobpulse.store import Store

    store = Store.connect(settings)
    before = store.breakdown().total
    producer = kafka.producer(settings)
    for offer_id in _one_id_per_shard(tag):
        offer = Offer(id=offer_id, category="Tech", latitude=48.85, longitude=2.35)
        kafka.produce(producer, settings.offers_topic, offer.to_json(), offer_id.encode())
    producer.flush(30)
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobpulse", "run", "--recovery-dir", str(recovery)],
        env=settings_module.child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    first = every = float("nan")
    try:
        deadline = began + 300
        while time.monotonic() < deadline and process.poll() is None:
            total = store.breakdown().total
            if total > before and first != first:
                first = time.monotonic() - began
            if total >= before + SHARDS:
                every = time.monotonic() - began
                break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return first, every


def scratch_settings(tag: str, state_dir: Path) -> Settings:
    """The environment's settings with topics, Redis prefix and state dir of this run's own."""
    return settings_module.load().with_overrides(
        offers_topic=f"{tag}.offers",
        deltas_topic=f"{tag}.deltas",
        dlq_topic=f"{tag}.dlq",
        redis_prefix=tag,
        state_dir=state_dir,
    )


def end_to_end(sizes: list[int], slice_: int, *, synthetic: bool = False) -> None:
    from jobpulse import topics
    from jobpulse.store import Store

    print("== 2. end to end: jobpulse run --once --workers 1, one growing topic and store")
    tag = f"scale-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="jobpulse-scale-") as state_dir:
        settings = scratch_settings(tag, Path(state_dir))
        recovery = Path(state_dir) / "recovery"
        topics.ensure_topics(settings)
        produce = _produce_synthetic if synthetic else _produce
        produced, seed = 0, 1
        previous: tuple[int, int] | None = None
        rates: dict[int, float] = {}
        try:
            for size in sizes:
                began = time.monotonic()
                produce(settings, size - produced, seed)
                produce_s = time.monotonic() - began
                seed, produced = seed + 1, size
                _, _, build_wall = _run_once(settings, recovery)
                produce(settings, slice_, seed)
                seed, produced = seed + 1, produced + slice_
                rate, rss, wall = _run_once(settings, recovery)
                rates[size] = rate
                slope = ""
                if previous is not None:
                    slope = f", {(rss - previous[1]) / (size - previous[0]):.1f} B/offer since"
                previous = (size, rss)
                first, every = _probe_restart(settings, recovery, f"probe-{tag}-{size}")
                produced += SHARDS
                open_now = Store.connect(settings).breakdown().total
                print(
                    f"{size:>11,} offers: {rate:,.0f} records/s in process (next {slice_:,}, "
                    f"{wall:.1f}s wall); peak RSS {_mb(rss)}{slope}; recovery store "
                    f"{_mb(_du(recovery))}; restart: first output {first:.2f}s, every shard "
                    f"{every:.2f}s; open offers {open_now:,} "
                    f"(produce {produce_s:.0f}s, grow {build_wall:.0f}s)",
                    flush=True,
                )
                produced = max(produced, open_now)
            first_size, last_size = sizes[0], sizes[-1]
            print(
                f"records/s at {last_size:,} vs at {first_size:,}: "
                f"{rates[last_size] / rates[first_size]:.0%}"
            )
        finally:
            topics.delete_topics(settings, topics.project_topics(settings))
            Store.connect(settings).clear()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="open offers, comma-separated")
    parser.add_argument("--slice", type=int, default=300_000, help="offers timed per size")
    parser.add_argument("--skip-run", action="store_true", help="only the in-process part")
    parser.add_argument("--skip-state", action="store_true", help="only the end-to-end part")
    parser.add_argument(
        "--synthetic-producer", action="store_true", help="produce with jobpulse produce"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.skip_state:
        state_benchmark(sizes, args.slice)
    if not args.skip_run:
        end_to_end(sizes, args.slice, synthetic=args.synthetic_producer)


if __name__ == "__main__":
    main()
