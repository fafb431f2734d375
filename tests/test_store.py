"""The Redis layout against a real Redis: absolute, idempotent writes and the readers."""

from __future__ import annotations

import orjson
import pytest

from jobpulse.delta import Cell
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress, Store, WindowCounts, totals

pytestmark = pytest.mark.integration

TECH_EU = Cell("Tech", "Europe")
CREA_ASIA = Cell("Créa", "Asia")


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.connect(settings)


def test_rewriting_the_same_absolute_values_changes_nothing(store: Store) -> None:
    store.write(cells={TECH_EU: 3, CREA_ASIA: 1})
    first = store.breakdown()
    store.write(cells={TECH_EU: 3, CREA_ASIA: 1})  # a replay after a crash
    second = store.breakdown()
    assert second.counts == first.counts == {"Tech": {"Europe": 3}, "Créa": {"Asia": 1}}
    assert second.total == 4
    assert second.version == first.version + 1


def test_a_cell_written_as_zero_disappears(store: Store) -> None:
    store.write(cells={TECH_EU: 2, CREA_ASIA: 1})
    store.write(cells={CREA_ASIA: 0})
    assert store.cells() == {TECH_EU: 2}
    assert store.breakdown().to_json_dict()["counts"] == {"Tech": {"Europe": 2}}


def test_empty_store_is_a_valid_empty_breakdown(store: Store) -> None:
    breakdown = store.breakdown()
    assert breakdown.to_json_dict() == {"counts": {}, "total": 0, "updated_at": None}
    assert store.windows() == [] and store.partitions() == {}


def test_windows_come_back_oldest_first_with_their_counts(store: Store) -> None:
    store.write(
        windows={
            120_000: WindowCounts(120_000, opened={TECH_EU: 2}, closed={}),
            60_000: WindowCounts(60_000, opened={CREA_ASIA: 1}, closed={TECH_EU: 1}),
        }
    )
    store.write(windows={120_000: WindowCounts(120_000, opened={TECH_EU: 5}, closed={})})
    windows = store.windows()
    assert [w.start_ms for w in windows] == [60_000, 120_000]
    assert windows[0].closed == {TECH_EU: 1}
    assert windows[1].opened == {TECH_EU: 5}  # absolute: the later write replaces
    assert store.windows(last=1) == [windows[1]]


def test_partition_progress_and_totals(store: Store) -> None:
    store.write(
        partitions={
            0: PartitionProgress(offset=10, records=10, dlq=1),
            1: PartitionProgress(offset=5, records=5, unknown_deletes=2, late=1),
        }
    )
    progress = store.partitions()
    assert list(progress) == [0, 1]
    assert totals(progress.values()) == PartitionProgress(15, 15, 1, 2, 1)


def test_each_write_publishes_its_version(store: Store) -> None:
    pubsub = store.pubsub()
    try:
        pubsub.get_message(timeout=1.0)  # let the subscription settle
        version = store.write(cells={TECH_EU: 1})
        message = pubsub.get_message(timeout=5.0)
        assert message is not None
        assert orjson.loads(message["data"])["version"] == version
    finally:
        pubsub.close()


def test_clear_deletes_only_its_own_prefix(settings: Settings, store: Store) -> None:
    other = Store(store.client, settings.redis_prefix + "-other")
    other.write(cells={TECH_EU: 7})
    store.write(cells={TECH_EU: 1}, windows={0: WindowCounts(0, opened={TECH_EU: 1})})
    assert store.clear() > 0
    assert store.cells() == {}
    assert other.cells() == {TECH_EU: 7}
    other.clear()


def test_unreachable_redis_is_one_clear_error(settings: Settings) -> None:
    from jobpulse.errors import ServiceUnavailable

    down = settings.with_overrides(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ServiceUnavailable, match="jobpulse stack up"):
        Store.connect(down)


def test_plus_adds_the_increments_and_keeps_the_further_offset() -> None:
    total = PartitionProgress(offset=10, records=10, dlq=1, unknown_deletes=2, late=3, stale=4)
    more = PartitionProgress(offset=7, records=2, dlq=1, unknown_deletes=1, late=1, stale=1)
    assert total.plus(more) == PartitionProgress(10, 12, 2, 3, 4, 5)
    assert more.plus(PartitionProgress(offset=12)) == PartitionProgress(12, 2, 1, 1, 1, 1)
