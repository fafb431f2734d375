"""Unit tests of the dashboard's pure transforms (no Redis, no browser)."""

from __future__ import annotations

import pytest

from jobpulse import breakdown as breakdown_table
from jobpulse.dashboard import view_model as vm
from jobpulse.delta import Cell
from jobpulse.offer import UNKNOWN
from jobpulse.store import Breakdown, PartitionProgress, WindowCounts

COUNTS = {
    "Tech": {"Europe": 5, "Asia": 2},
    UNKNOWN: {"Europe": 9, UNKNOWN: 1},
    "Business": {"Europe": 3, "North America": 4},
    "Admin": {"Oceania": 7},
}


def test_empty_breakdown_is_a_total_row_of_zeros() -> None:
    table = breakdown_table.table_columns({})
    assert table[breakdown_table.CATEGORY_COLUMN] == [breakdown_table.TOTAL]
    assert all(
        values == [0] for key, values in table.items() if key != breakdown_table.CATEGORY_COLUMN
    )
    assert vm.stacked_bar_columns({}) == {
        k: [] for k in ("continent", "category", "bottom", "top", "n", "color")
    }
    h = vm.headline(vm.Snapshot(breakdown=Breakdown(counts={}), redis_ok=True))
    assert (h.open_offers, h.opened_last_window, h.dlq, h.window_start_ms) == (0, 0, 0, None)


def test_redis_never_read_is_unknown_not_zero() -> None:
    never = vm.Snapshot(redis_ok=False, redis_error="refused")
    assert vm.redis_never_read(never)
    assert vm.headline(never) == vm.UNKNOWN_HEADLINE
    assert vm.headline(never).open_offers is None and vm.headline(never).dlq is None
    table = breakdown_table.table_columns({}, known=False)
    assert table[breakdown_table.CATEGORY_COLUMN] == [breakdown_table.TOTAL]
    assert all(
        values == [None] for key, values in table.items() if key != breakdown_table.CATEGORY_COLUMN
    )
    cols = vm.partition_columns({}, {0: 4, 1: 9}, 2, known=False)
    assert cols["end"] == [4, 9]
    assert cols["offset"] == cols["lag"] == cols["records"] == cols["dlq"] == [None, None]
    assert vm.total_lag(cols) is None
    # Once read, an empty Redis is zeros again.
    assert not vm.redis_never_read(vm.Snapshot(breakdown=Breakdown(counts={}), redis_ok=False))


def test_stacked_bars_stack_each_continent_in_table_order() -> None:
    bars = vm.stacked_bar_columns(COUNTS)
    europe = [i for i, c in enumerate(bars["continent"]) if c == "Europe"]
    assert [bars["category"][i] for i in europe] == ["Business", "Tech", UNKNOWN]
    assert [(bars["bottom"][i], bars["top"][i]) for i in europe] == [(0, 3), (3, 8), (8, 17)]
    # Every non-zero cell is exactly one segment, with its count as height.
    segments = {(bars["category"][i], bars["continent"][i]): bars["n"][i] for i in europe}
    assert segments == {
        (cat, "Europe"): COUNTS[cat]["Europe"] for cat in ("Business", "Tech", UNKNOWN)
    }
    assert len(bars["n"]) == sum(1 for row in COUNTS.values() for n in row.values() if n)
    assert all(t - b == n for b, t, n in zip(bars["bottom"], bars["top"], bars["n"], strict=True))


def test_category_colours_are_stable_and_unknown_is_grey() -> None:
    colors = vm.category_colors(["Tech", "Admin", UNKNOWN])
    assert colors[UNKNOWN] == vm.UNKNOWN_COLOR
    assert colors["Admin"] != colors["Tech"]
    assert vm.category_colors(["Tech", "Admin"])["Tech"] == colors["Tech"]


def test_trend_columns_sum_cells_per_continent() -> None:
    windows = [
        WindowCounts(60_000, {Cell("Tech", "Europe"): 2, Cell("Admin", "Europe"): 1}, {}),
        WindowCounts(120_000, {Cell("Tech", "Asia"): 4}, {Cell("Tech", "Europe"): 3}),
    ]
    trend = vm.trend_columns(windows, ["Europe", "Asia", UNKNOWN])
    assert trend["start"] == [60_000, 120_000]
    assert trend[vm.trend_key("opened", "Europe")] == [3, 0]
    assert trend[vm.trend_key("opened", "Asia")] == [0, 4]
    assert trend[vm.trend_key("closed", "Europe")] == [0, 3]
    assert trend[vm.trend_key("opened", UNKNOWN)] == [0, 0]
    assert trend["opened"] == [3, 4]
    assert trend["closed"] == [0, 3]


def test_headline_uses_newest_window_and_partition_totals() -> None:
    snapshot = vm.Snapshot(
        breakdown=Breakdown(counts=COUNTS),
        windows=(
            WindowCounts(0, {Cell("Tech", "Europe"): 9}, {}),
            WindowCounts(60_000, {Cell("Tech", "Europe"): 2}, {Cell("Tech", "Asia"): 1}),
        ),
        partitions={
            0: PartitionProgress(10, 10, 1, 2, 3, 7),
            1: PartitionProgress(5, 5, 4, 0, 0, 1),
        },
        records_per_s=12.5,
    )
    h = vm.headline(snapshot)
    assert h.open_offers == 31
    assert (h.window_start_ms, h.opened_last_window, h.closed_last_window) == (60_000, 2, 1)
    assert (h.dlq, h.records, h.late, h.unknown_deletes, h.stale) == (5, 15, 3, 2, 8)
    assert h.records_per_s == 12.5


def test_partition_columns_lag_and_missing_partitions() -> None:
    cols = vm.partition_columns({1: PartitionProgress(offset=7, records=7)}, {0: 3, 1: 10}, 3)
    assert cols["partition"] == [0, 1, 2]
    assert cols["offset"] == [0, 7, 0]
    assert cols["end"] == [3, 10, None]
    assert cols["lag"] == [3, 3, None]
    assert vm.total_lag(cols) == 6
    unknown = vm.partition_columns({}, None, 2)
    assert unknown["end"] == [None, None]
    assert unknown["lag"] == [None, None]
    assert vm.total_lag(unknown) is None


def test_records_rate_and_reset() -> None:
    assert vm.records_rate([]) is None
    assert vm.records_rate([(0.0, 5)]) is None
    assert vm.records_rate([(0.0, 0), (2.0, 50), (4.0, 100)]) == 25.0
    # The prefix was cleared: measure from the drop on.
    assert vm.records_rate([(0.0, 500), (1.0, 10), (3.0, 30)]) == 10.0


def test_age_text_and_updated_at_parsing() -> None:
    assert vm.age_text(None) == "never"
    assert vm.age_text(0.4) == "just now"
    assert vm.age_text(12.7) == "12 s ago"
    assert vm.age_text(600) == "10 min ago"
    assert vm.parse_updated_at("1970-01-01T00:01:00.000Z") == 60.0
    assert vm.parse_updated_at(None) is None
    assert vm.parse_updated_at("not a date") is None


def test_column_patches_only_changed_cells() -> None:
    old = {"a": [1, 2, 3], "b": ["x", "y", "z"]}
    new = {"a": [1, 5, 3], "b": ["x", "y", "w"]}
    assert vm.column_patches(old, new) == {"a": [(1, 5)], "b": [(2, "w")]}
    assert vm.column_patches(old, old) == {}
    with pytest.raises(ValueError):
        vm.column_patches(old, {"a": [1, 2], "b": ["x", "y"]})


def test_continent_names_have_one_owner_and_the_dashboard_stays_light() -> None:
    import subprocess
    import sys

    from jobpulse import breakdown, delta

    assert vm.CONTINENTS is delta.CONTINENTS
    assert breakdown.CONTINENTS is delta.CONTINENTS
    assert delta.NORTH_AMERICA == "North America" and len(delta.CONTINENTS) == 7
    # The dashboard must not pull in the dataflow (bytewax, reverse_geocoder) to get them.
    probe = (
        "import sys, jobpulse.dashboard.app, jobpulse.dashboard.server; "
        "print(sorted(m for m in sys.modules if m.startswith(('jobpulse.dataflows', 'bytewax'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_end_offset_is_never_below_the_processed_offset() -> None:
    # The end offsets were polled before the dataflow processed partition 0 further.
    progress = {0: PartitionProgress(offset=120, records=120), 1: PartitionProgress(offset=5)}
    cols = vm.partition_columns(progress, {0: 100, 1: 9}, 2)
    assert cols["end"] == [120, 9]
    assert cols["lag"] == [0, 4]
    assert all(end >= offset for end, offset in zip(cols["end"], cols["offset"], strict=True))


def test_only_a_window_still_open_is_marked_filling() -> None:
    windows = [WindowCounts(0), WindowCounts(60_000)]
    assert vm.filling_window(windows, 60, now=61.0) == 60_000  # 1 s into the newest window
    assert vm.filling_window(windows, 60, now=120.0) is None  # it closed
    assert vm.filling_window([], 60, now=0.0) is None


def test_window_starts_are_shown_to_the_second() -> None:
    assert vm.format_window(None) == "–"
    assert vm.format_window(0) == "00:00:00 UTC"
    # A 90 s window (JOBPULSE_WINDOW_SECONDS may be any number of seconds) starts at :30.
    assert vm.format_window(90_000) == "00:01:30 UTC"
