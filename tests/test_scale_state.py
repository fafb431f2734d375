"""The compact state's run files in a real run: ``kill -9`` while snapshots write them, twice,
across a rescale (2 processes → 2 workers → 1), still resumes exactly."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import CliRunner, recounted
from scenario import expected
from test_run_integration import kill_9_once_counted, produce, synthetic_steps

from jobpulse.dataflows.compact_state import STATE_DIR
from jobpulse.settings import Settings
from jobpulse.store import Store, totals

pytestmark = pytest.mark.integration


@pytest.mark.partitions(4)
def test_kill_9_during_snapshots_of_run_files_resumes_exactly(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    count = 150_000  # ~400 entries per shard: every shard writes run files
    steps = synthetic_steps(count, seed=23)
    want = expected(steps)
    produce(settings, steps, flush_s=60)
    recovery = tmp_path / "recovery"
    where = ("--recovery-dir", str(recovery))
    # Snapshots every 0.2 s: the 256 shards write run files all the time, so each kill
    # lands in or near a snapshot.
    often = ("--snapshot-interval", "0.2", *where)
    rng = random.Random()
    first = kill_9_once_counted(
        settings, int(count * rng.uniform(0.2, 0.4)), "--processes", "2", *often
    )
    assert first < count, "the dataflow finished before the kill: nothing was tested"
    second = kill_9_once_counted(
        settings, int(count * rng.uniform(0.6, 0.8)), "--workers", "2", *often
    )
    assert second < count, "the dataflow finished before the second kill"
    assert len(list((recovery / STATE_DIR).glob("shard-*/run-*.bin"))) > 100

    resumed = cli(settings, "run", "--once", *where, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    store = Store.connect(settings)
    assert store.cells() == want.counts
    progress = totals(store.partitions().values())
    assert progress.records == count
    assert progress.unknown_deletes == want.unknown_deletes
    with recounted(settings, cli) as recount:
        assert recount.cells() == store.cells()
