"""The whole flow with bytewax.testing sources and sinks: no Kafka or Redis needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main
from scenario import DELETE, PROFESSION_CATEGORIES, Step, expected, scenario

from jobpulse.dataflows.dlq import REASON, header_map
from jobpulse.dataflows.flow import FlowSinks, build_flow
from jobpulse.dataflows.items import CellUpdate, RawChunk
from jobpulse.delta import Cell, Delta, fold
from jobpulse.offer import UNKNOWN, format_rfc3339
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress

SETTINGS = Settings(offers_topic="offers", window_seconds=60)
T0 = 1_764_064_800_000  # 2025-11-25T10:00:00Z, a window start


class ListSink:
    """A TestingSink-compatible sink list per output (shared across workers and runs)."""

    def __init__(self) -> None:
        from bytewax.testing import TestingSink

        self.deltas: list[Any] = []
        self.dlq: list[Any] = []
        self.redis: list[Any] = []
        self.sinks = FlowSinks(
            TestingSink(self.deltas), TestingSink(self.dlq), TestingSink(self.redis)
        )

    def delta_messages(self) -> list[Delta]:
        return [Delta.from_json(value) for batch in self.deltas for _, value, _ in batch]

    def final_cells(self) -> dict[Cell, int]:
        """The last absolute value written per cell (what Redis holds), zeros dropped."""
        cells: dict[Cell, int] = {}
        for _, value in self.redis:
            if isinstance(value, CellUpdate):
                cells[value.cell] = value.count
        return {c: n for c, n in cells.items() if n}

    def final_progress(self) -> dict[int, PartitionProgress]:
        return {int(k): v for k, v in self.redis if isinstance(v, PartitionProgress)}

    def final_windows(self) -> dict[tuple[int, Cell], tuple[int, int]]:
        windows: dict[tuple[int, Cell], tuple[int, int]] = {}
        for _, value in self.redis:
            if isinstance(value, CellUpdate):
                for start, counts in value.windows.items():
                    windows[(start, value.cell)] = counts
        return windows


def _chunks(steps: list[Step], partitions: int = 3, per_chunk: int = 4) -> list[RawChunk]:
    """Spread the steps over partitions by key (like Kafka), keeping order within a partition."""
    by_partition: dict[int, list[Any]] = {}
    for step in steps:
        partition = sum(step.key or b"") % partitions
        records = by_partition.setdefault(partition, [])
        records.append((len(records), T0 + len(records) * 1000, step.key, step.value, None))
    chunks = []
    for partition, records in sorted(by_partition.items()):
        for i in range(0, len(records), per_chunk):
            chunks.append(RawChunk(partition, records[i : i + per_chunk]))
    # Interleave partitions the way a consumer would see them.
    return sorted(chunks, key=lambda c: (c.records[0][0], c.partition))


def _flow(chunks: list[Any], out: ListSink) -> Any:
    return build_flow(SETTINGS, TestingSource(chunks), out.sinks, PROFESSION_CATEGORIES)


def test_scenario_gives_exact_counts_deltas_dlq_and_progress() -> None:
    steps = scenario()
    want = expected(steps)
    chunks = _chunks(steps)
    out = ListSink()
    run_main(_flow(chunks, out))

    assert out.final_cells() == want.counts
    deltas = out.delta_messages()
    assert fold(deltas) == want.counts
    assert len({d.event_id for d in deltas}) == len(deltas)
    assert sum(d.action == "increment" for d in deltas) == want.increments
    assert sum(d.action == "decrement" for d in deltas) == want.decrements

    dlq = [message for batch in out.dlq for message in batch]
    got = sorted((k or b"", v or b"", header_map(h)[REASON].decode()) for k, v, h in dlq)
    assert got == sorted((s.key or b"", s.value or b"", str(s.expect)) for s in want.rejected)

    progress = out.final_progress()
    assert sum(p.records for p in progress.values()) == len(steps)
    assert sum(p.dlq for p in progress.values()) == len(want.rejected)
    assert sum(p.unknown_deletes for p in progress.values()) == want.unknown_deletes
    ends = {c.partition: c.records[-1][0] + 1 for c in chunks}
    assert {p: pr.offset for p, pr in progress.items()} == ends


def test_windows_count_opened_and_closed_per_cell() -> None:
    steps = scenario()
    want = expected(steps)
    out = ListSink()
    run_main(_flow(_chunks(steps), out))
    windows = out.final_windows()
    opened = sum(o for o, _ in windows.values())
    closed = sum(c for _, c in windows.values())
    late = sum(p.late for p in out.final_progress().values())
    # Every delta is in a window or counted late, never dropped; nothing here is late.
    assert (opened + closed + late) == (want.increments + want.decrements)
    assert late == 0
    # The first offer counts in the window of its published_at (09:59:30), not of its record.
    published = int(datetime(2025, 11, 25, 9, 59, tzinfo=UTC).timestamp() * 1000)
    assert windows[(published, Cell("Tech", "Europe"))] == (1, 0)


def test_a_delta_for_a_window_no_longer_retained_is_counted_late() -> None:
    three_hours_before = format_rfc3339(T0 - 3 * 3600 * 1000)
    records = [
        (0, T0, b"a", b'{"id": "a", "category": "Tech"}', None),
        (
            1,
            T0,
            b"b",
            b'{"id": "b", "category": "Tech", "published_at": "%s"}' % three_hours_before.encode(),
            None,
        ),
        (
            2,
            T0,
            b"c",
            b'{"id": "c", "category": "Tech", "published_at": "%s"}' % three_hours_before.encode(),
            None,
        ),
    ]
    out = ListSink()
    run_main(_flow([RawChunk(0, records[:1]), RawChunk(0, records[1:])], out))
    assert out.final_cells() == {Cell("Tech", "Unknown"): 3}  # the count is never windowed
    assert out.final_progress()[0].late == 2
    assert out.final_windows() == {(T0, Cell("Tech", "Unknown")): (1, 0)}


def test_two_workers_give_the_same_counts() -> None:
    steps = scenario()
    out = ListSink()
    cluster_main(_flow(_chunks(steps), out), [], 0, worker_count_per_proc=2)
    assert out.final_cells() == expected(steps).counts
    assert fold(out.delta_messages()) == expected(steps).counts


def test_abort_and_resume_from_the_recovery_store_is_exact(tmp_path: Path) -> None:
    steps = scenario() + scenario("t") + scenario("u")
    want = expected(steps)
    chunks = _chunks(steps, per_chunk=2)
    aborted = [*chunks[: len(chunks) // 2], TestingSource.ABORT(), *chunks[len(chunks) // 2 :]]
    init_db_dir(tmp_path, 2)
    recovery = RecoveryConfig(str(tmp_path))
    out = ListSink()
    flow = _flow(aborted, out)
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    written_before_resume = len(out.delta_messages())
    assert written_before_resume > 0
    assert out.final_cells() != want.counts  # stopped half way
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    assert out.final_cells() == want.counts
    deltas = out.delta_messages()
    assert fold(deltas) == want.counts  # de-duplicated by event id
    assert sum(p.records for p in out.final_progress().values()) == len(steps)


@pytest.mark.parametrize("resends", [1, 3])
def test_replaying_the_same_records_changes_nothing(resends: int) -> None:
    """A producer that re-sends its whole history (new offsets) leaves the counts unchanged."""
    steps = [s for s in scenario() if s.expect != DELETE]
    out = ListSink()
    run_main(_flow(_chunks(steps * resends), out))
    assert out.final_cells() == expected(steps).counts


def test_delta_messages_are_exactly_the_contract_json() -> None:
    from jobpulse.dataflows.items import StateOutput
    from jobpulse.dataflows.steps import DeltaSerializer
    from jobpulse.delta import Action, event_id
    from jobpulse.offer import format_rfc3339

    cell = Cell("Marketing / Comm'", "North America")
    times = [0, 999, T0 + 1, T0 + 59_999, 4_102_444_799_999]
    output = StateOutput(
        [
            (1 if i % 2 else -1, cell, f"o-é{i}", 5, 100 + i, i % 2, ts)
            for i, ts in enumerate(times)
        ],
        {},
    )
    [messages] = DeltaSerializer(SETTINGS)([("5", output)])
    for (sign, _, offer_id, _, offset, index, ts), (key, value, _) in zip(
        output.deltas, messages, strict=True
    ):
        contract = Delta(
            Action.INCREMENT if sign > 0 else Action.DECREMENT,
            cell.category,
            cell.continent,
            offer_id,
            event_id("offers", 5, offset, index),
            format_rfc3339(ts),
        )
        assert (key, value) == (contract.key(), contract.to_json())


def test_event_time_is_published_at_unless_far_after_the_record_timestamp() -> None:
    from jobpulse.dataflows.steps import MAX_EVENT_AHEAD_MS, Parser

    def body(published_ms: int | None) -> bytes:
        fields = {"id": "o"} | (
            {"published_at": format_rfc3339(published_ms)} if published_ms else {}
        )
        return orjson.dumps(fields)

    past, soon, far = T0 - 86_400_000, T0 + MAX_EVENT_AHEAD_MS, T0 + MAX_EVENT_AHEAD_MS + 1
    chunk = RawChunk(
        0, [(i, T0, b"o", body(p), None) for i, p in enumerate([None, past, soon, far])]
    )
    [parsed] = Parser("offers")([chunk])
    assert [event_ms for _, _, event_ms, _, _ in parsed.records] == [T0, past, soon, T0]


def test_the_delta_format_has_one_owner() -> None:
    """The serializer spells neither the actions nor the event id nor the JSON: jobpulse.delta
    does, and its fast encoder gives the bytes of Delta.to_json for any cell and id."""
    import inspect

    from jobpulse.dataflows import steps as flow
    from jobpulse.delta import Action, DeltaEncoder, event_id
    from jobpulse.offer import format_rfc3339

    source = inspect.getsource(flow.DeltaSerializer)
    for spelled in ('"increment"', '"decrement"', "orjson", "event_id", "/"):
        assert spelled not in source.split('"""')[-1], spelled
    encoder = DeltaEncoder("jobs.offers-v2")
    cells = [Cell("Tech", "Europe"), Cell('Q"uote\\ \u2028 é', "Unknown"), Cell("", "Asia")]
    for n, (sign, cell, offer_id) in enumerate(
        (sign, cell, offer_id)
        for sign in (1, -1)
        for cell in cells
        for offer_id in ("o-1", 'o"\\\n', "é" * 3, "")
    ):
        event_ms = T0 + n * 7_919
        contract = Delta(
            Action.INCREMENT if sign > 0 else Action.DECREMENT,
            cell.category,
            cell.continent,
            offer_id,
            event_id("jobs.offers-v2", n % 3, 10**12 + n, n % 2),
            format_rfc3339(event_ms),
        )
        [(key, value, headers)] = encoder.messages(
            [(sign, cell, offer_id, n % 3, 10**12 + n, n % 2, event_ms)]
        )
        assert (key, value, headers) == (contract.key(), contract.to_json(), None)
        assert Delta.from_json(value) == contract


def test_an_offer_spread_over_partitions_and_workers_meets_one_state() -> None:
    """Keyless records of the same offers on different partitions, on one worker and on two:
    each offer is counted once, moves and closes follow the newest record, an older version
    read after the delete is stale."""
    by_partition: dict[int, list[Any]] = {p: [] for p in range(4)}

    def put(partition: int, body: dict[str, Any], at: int) -> None:
        records = by_partition[partition]
        records.append((len(records), at, None, orjson.dumps(body), None))

    for n in range(30):
        put(n % 3, {"id": f"k-{n}", "category": "Tech"}, T0 + n)
    for n in range(30):  # identical re-sends, each on another partition
        put((n + 1) % 3, {"id": f"k-{n}", "category": "Tech"}, T0 + 100 + n)
    for n in range(0, 30, 3):  # moves, on a third partition
        put((n + 2) % 3, {"id": f"k-{n}", "category": "Retail"}, T0 + 200 + n)
    for n in range(1, 30, 3):  # closes
        put(n % 3, {"id": f"k-{n}", "op": "delete"}, T0 + 300 + n)
    # An older version of closed k-1, read last, from a partition with nothing newer.
    put(3, {"id": "k-1", "category": "Tech"}, T0 + 150)
    chunks = [RawChunk(p, records) for p, records in by_partition.items()]
    want = {Cell("Tech", UNKNOWN): 10, Cell("Retail", UNKNOWN): 10}

    one, two = ListSink(), ListSink()
    run_main(_flow(chunks, one))
    cluster_main(_flow(chunks, two), [], 0, worker_count_per_proc=2)
    for out in (one, two):
        assert out.final_cells() == want
        assert fold(out.delta_messages()) == want
        progress = out.final_progress()
        # Partitions are read one after the other: partition 2 comes after 0 and 1 hold newer
        # versions of 20 of its offers (10 re-sent on 0, 10 closed on 1), and partition 3's
        # one record is older than k-1's delete.
        assert {p: c.stale for p, c in progress.items()} == {0: 0, 1: 0, 2: 20, 3: 1}
        assert sum(c.records for c in progress.values()) == 30 + 30 + 10 + 10 + 1


def test_offer_rows_folded_newest_first_give_the_counts() -> None:
    """Every valid record becomes one offer row with the cell the counts used; keeping the
    newest version per offer (what the PostgreSQL sink does) gives exactly the counts."""
    from bytewax.testing import TestingSink

    from jobpulse.offer_row import OfferRow

    steps = scenario()
    out, rows = ListSink(), []
    out.sinks = FlowSinks(out.sinks.deltas, out.sinks.dlq, out.sinks.redis, rows=TestingSink(rows))
    run_main(_flow(_chunks(steps), out))
    decoded = [(key, OfferRow.from_json(value)) for batch in rows for key, value, _ in batch]
    assert all(key == row.key() for key, row in decoded)
    valid = len(steps) - len(expected(steps).rejected)
    assert len(decoded) == valid
    newest: dict[str, OfferRow] = {}
    for _, row in decoded:
        if row.id not in newest or row.version > newest[row.id].version:
            newest[row.id] = row
    open_counts: dict[Cell, int] = {}
    for row in newest.values():
        if row.op == "upsert":
            cell = Cell(row.category or "", row.continent or "")
            open_counts[cell] = open_counts.get(cell, 0) + 1
    assert open_counts == expected(steps).counts == out.final_cells()
    deletes = [row for _, row in decoded if row.op == "delete"]
    assert deletes and all(row.category is None and row.continent is None for row in deletes)


def test_a_chunk_crossing_processes_pickles_its_records_once() -> None:
    """Bytewax pickles an exchanged item twice (to size it, then to send it)."""
    import pickle

    from jobpulse.dataflows.items import UPSERT, EnrichedChunk

    cell = Cell("Tech", "Europe")
    chunk = EnrichedChunk(7, [(3, 10, 1_000, 1_000, "a", UPSERT, cell, 2**100 + 1)] * 3)
    pickled_records = []
    real_dumps = pickle.dumps

    def counting_dumps(obj: object, *args: object, **kwargs: object) -> bytes:
        if isinstance(obj, list):
            pickled_records.append(obj)
        return real_dumps(obj, *args, **kwargs)

    pickle.dumps = counting_dumps  # type: ignore[assignment]
    try:
        first, second = pickle.dumps(("7", chunk)), pickle.dumps(("7", chunk))
    finally:
        pickle.dumps = real_dumps
    assert first == second and len(pickled_records) == 1
    key, arrived = pickle.loads(second)
    assert key == "7" and arrived == chunk and arrived.records[0][6] == cell
