"""The recovery store: initialised once, refused when made with another state layout, and
never silently replacing the counts already under the Redis prefix."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from conftest import CliRunner, one_error_line

from jobpulse.dataflows.runner import LAYOUT_FILE, STATE_LAYOUT, ensure_recovery_dir
from jobpulse.delta import Cell
from jobpulse.errors import UsageError
from jobpulse.offer import Offer
from jobpulse.settings import Settings
from jobpulse.store import Store


def test_initialised_on_first_use_only(tmp_path: Path) -> None:
    store = tmp_path / "recovery"
    assert ensure_recovery_dir(store, 3) is True
    assert sorted(p.name for p in store.glob("part-*.sqlite3")) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
        "part-2.sqlite3",
    ]
    assert orjson.loads((store / LAYOUT_FILE).read_bytes()) == STATE_LAYOUT
    assert ensure_recovery_dir(store, 3) is False


def test_a_store_with_another_layout_is_refused(tmp_path: Path) -> None:
    ensure_recovery_dir(tmp_path, 2)
    (tmp_path / LAYOUT_FILE).write_bytes(orjson.dumps({"version": 1, "buckets_per_partition": 8}))
    with pytest.raises(UsageError, match=r"keys state by offer id .* --recount --recovery-dir"):
        ensure_recovery_dir(tmp_path, 2)


def test_an_unusable_directory_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="cannot use the recovery directory"):
        ensure_recovery_dir(blocker / "recovery", 2)


# -- a new recovery store and a Redis prefix that already holds counts ----------------------


@pytest.mark.integration
@pytest.mark.partitions(2)
def test_a_new_store_does_not_silently_replace_existing_counts(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    first_store = tmp_path / "first"
    produce_offers(settings, ["o-1", "o-2", "o-3"])
    first = cli(settings, "run", "--once", "--recovery-dir", str(first_store))
    assert first.returncode == 0, first.stderr
    counted = Store.connect(settings).cells()
    assert sum(counted.values()) == 3

    # E.g. run from another directory (the default state dir is relative): a new store.
    other_store = tmp_path / "elsewhere"
    refused = cli(settings, "run", "--once", "--recovery-dir", str(other_store))
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert str(other_store) in line and "--recount" in line and "--recovery-dir" in line
    assert Store.connect(settings).cells() == counted  # nothing cleared
    assert not list(other_store.glob("part-*.sqlite3"))  # and the store is still new

    # Resuming with the store that wrote them just works.
    resumed = cli(settings, "run", "--once", "--recovery-dir", str(first_store))
    assert resumed.returncode == 0, resumed.stderr

    # --recount replaces them: cleared, then recounted from offset 0 into the new store.
    Store.connect(settings).write(cells={Cell("Stale", "Atlantis"): 5})
    recount = cli(settings, "run", "--once", "--recovery-dir", str(other_store), "--recount")
    assert recount.returncode == 0, recount.stderr
    assert Store.connect(settings).cells() == counted
    assert list(other_store.glob("part-*.sqlite3"))

    # --recount with a store that exists would resume, not recount: refused.
    again = cli(settings, "run", "--once", "--recovery-dir", str(other_store), "--recount")
    assert again.returncode == 2
    assert "--recount needs a new recovery store" in one_error_line(again)


@pytest.mark.integration
@pytest.mark.partitions(2)
def test_a_fresh_prefix_just_starts(settings: Settings, cli: CliRunner) -> None:
    produce_offers(settings, ["o-1"])
    result = cli(settings, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert "--recount" not in result.stderr
    assert sum(Store.connect(settings).cells().values()) == 1


def produce_offers(settings: Settings, ids: list[str]) -> None:
    producer = Producer(settings.kafka_client_config())
    for offer_id in ids:
        producer.produce(settings.offers_topic, Offer(id=offer_id).to_json(), offer_id.encode())
    assert producer.flush(30) == 0
