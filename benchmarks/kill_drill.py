"""kill -9 in the middle of a snapshot with a large state, then resume: exact or not.

    python -m benchmarks.kill_drill [--offers 25000000] [--kill-at 0.8] [--no-recount]

Produces ``--offers`` new offers that stay open (the scale benchmark's fast producer:
``benchmarks/scale.py``) to a fresh topic, runs ``jobpulse run --once --snapshot-interval 2``
on it and, once that run has processed ``--kill-at`` of them, waits for a snapshot to be
writing its run files (a ``.tmp`` file in ``<recovery dir>/jobpulse-state``) and kills the
run with SIGKILL right then. Then ``jobpulse run --once`` resumes on the same recovery store.

The result is compared with a truth computed here, independently of jobpulse: offer ``n`` is
in category ``n % 8`` of the producer's list and at place ``n % 5`` (Paris, Tokyo, Sydney,
Cairo, New York: one continent each), so each cell's count is how many ``n < offers`` fall in
its residues — and, unless ``--no-recount``, with a from-scratch recount of the same topic
into a new Redis prefix and recovery store. Prints the timings and the verdict; exits 1 on a
mismatch. Everything it created is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from jobpulse import settings as settings_module
from jobpulse import topics
from jobpulse.dataflows.compact_state import STATE_DIR
from jobpulse.delta import Cell
from jobpulse.settings import Settings
from jobpulse.store import Store, totals

from .scale import CELLS, _produce, scratch_settings

#: The scale producer's places, in its order, and their continents (by hand, not geocoded).
PLACE_CONTINENTS = ["Europe", "Asia", "Oceania", "Africa", "North America"]
SNAPSHOT_INTERVAL_S = "2"


def truth(offers: int) -> dict[Cell, int]:
    """Open offers per cell after ``offers`` offers of the scale producer (all stay open)."""
    categories = [cell.category for cell in CELLS[:: len(CELLS) // 8]]
    period = len(categories) * len(PLACE_CONTINENTS)  # 40: both residues repeat together
    counts: Counter[Cell] = Counter()
    for r in range(min(period, offers)):
        cell = Cell(categories[r % len(categories)], PLACE_CONTINENTS[r % len(PLACE_CONTINENTS)])
        counts[cell] += (offers - r + period - 1) // period
    return dict(counts)


def _start_run(settings: Settings, recovery: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobpulse", "run", "--once", "--recovery-dir", str(recovery), *args],
        env=settings_module.child_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _writing_a_snapshot(recovery: Path) -> bool:
    """A run file is being written (the snapshot of an epoch is in progress)."""
    return any((recovery / STATE_DIR).glob("shard-*/*.tmp"))


def _kill_during_a_snapshot(settings: Settings, recovery: Path, at: int) -> tuple[int, float]:
    """Run until ``at`` records are processed and a snapshot writes files; SIGKILL it then.
    Returns (records processed at the kill, seconds)."""
    store = Store.connect(settings)
    began = time.monotonic()
    run = _start_run(settings, recovery, "--snapshot-interval", SNAPSHOT_INTERVAL_S)
    try:
        while totals(store.partitions().values()).records < at:
            if run.poll() is not None:
                raise SystemExit(f"the run ended (status {run.returncode}) before the kill")
            time.sleep(0.2)
        while not _writing_a_snapshot(recovery):
            if run.poll() is not None:
                raise SystemExit("the run ended before a snapshot was caught writing")
            time.sleep(0.001)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
    return totals(store.partitions().values()).records, time.monotonic() - began


def _run_to_the_end(settings: Settings, recovery: Path) -> float:
    began = time.monotonic()
    run = _start_run(settings, recovery)
    if run.wait() != 0:
        raise SystemExit(f"the run failed with status {run.returncode}")
    return time.monotonic() - began


def drill(offers: int, kill_at: float, recount: bool) -> bool:
    tag = f"drill-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="jobpulse-drill-") as state_dir:
        settings = scratch_settings(tag, Path(state_dir))
        recount_settings = settings.with_overrides(redis_prefix=f"{tag}-recount")
        topics.ensure_topics(settings)
        try:
            began = time.monotonic()
            _produce(settings, offers, seed=1)
            print(f"produced {offers:,} offers in {time.monotonic() - began:.0f}s", flush=True)
            recovery = Path(state_dir) / "recovery"
            done, seconds = _kill_during_a_snapshot(settings, recovery, int(offers * kill_at))
            stored = sum(f.stat().st_size for f in recovery.rglob("*") if f.is_file())
            print(
                f"kill -9 during a snapshot after {seconds:.0f}s, {done:,} records processed; "
                f"recovery store {stored / 2**20:,.0f} MB",
                flush=True,
            )
            print(f"resumed to the end in {_run_to_the_end(settings, recovery):.0f}s", flush=True)
            store = Store.connect(settings)
            cells, want = store.cells(), truth(offers)
            records = totals(store.partitions().values()).records
            exact = cells == want and records == offers and sum(cells.values()) == offers
            print(
                f"against the truth: {'exact' if exact else 'MISMATCH'} "
                f"({sum(cells.values()):,} open offers in {len(cells)} cells, {records:,} "
                f"records; truth {sum(want.values()):,} in {len(want)} cells)"
            )
            if recount:
                seconds = _run_to_the_end(recount_settings, Path(state_dir) / "recount")
                same = Store.connect(recount_settings).cells() == cells
                print(
                    f"from-scratch recount in {seconds:.0f}s: {'the same' if same else 'MISMATCH'}"
                )
                exact = exact and same
            return exact
        finally:
            topics.delete_topics(settings, topics.project_topics(settings))
            Store.connect(settings).clear()
            Store.connect(recount_settings).clear()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kill_drill")
    parser.add_argument("--offers", type=int, default=25_000_000, help="open offers to ingest")
    parser.add_argument("--kill-at", type=float, default=0.8, help="share processed at the kill")
    parser.add_argument("--no-recount", action="store_true", help="skip the recount")
    args = parser.parse_args()
    sys.exit(0 if drill(args.offers, args.kill_at, recount=not args.no_recount) else 1)


if __name__ == "__main__":
    main()
