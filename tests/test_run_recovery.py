"""The recovery store: initialised once, and refused when made with another state layout."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from jobpulse.dataflows.runner import LAYOUT_FILE, STATE_LAYOUT, ensure_recovery_dir
from jobpulse.errors import UsageError


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
    with pytest.raises(UsageError, match="use a new --recovery-dir"):
        ensure_recovery_dir(tmp_path, 2)


def test_an_unusable_directory_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="cannot use the recovery directory"):
        ensure_recovery_dir(blocker / "recovery", 2)
