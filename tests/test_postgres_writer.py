"""The PostgreSQL sink's pure parts: rounds, COPY tuples, storable rows, the summary line."""

from __future__ import annotations

import pytest

from jobpulse.offer_row import OfferRow, version_of
from jobpulse.postgres.sink import SinkResult, summary
from jobpulse.postgres.writer import (
    STAGE_COLUMNS,
    Applied,
    Unstorable,
    check_storable,
    copy_tuple,
    plan_rounds,
)

T0 = 1_764_064_800_000


def row(offer_id: str, ms: int, *, op: str = "upsert", partition: int = 0, offset: int = 0, **kw):
    fields = {} if op == "delete" else {"category": "Tech", "continent": "Europe", **kw}
    return OfferRow(
        id=offer_id,
        op=op,  # type: ignore[arg-type]
        event_ms=T0 + ms,
        partition=partition,
        offset=offset,
        timestamp_ms=T0 + ms,
        version=version_of(T0 + ms, partition),
        **fields,
    )


def ids(rounds: list[list[OfferRow]]) -> list[list[tuple[str, int]]]:
    return [[(r.id, r.offset) for r in members] for members in rounds]


def test_one_round_when_every_id_appears_once() -> None:
    rows = [row("a", 1, offset=1), row("b", 2, offset=2), row("c", 3, offset=3)]
    assert plan_rounds(rows) == [rows]
    assert plan_rounds([]) == []


def test_rows_of_one_id_go_to_successive_rounds_in_reading_order() -> None:
    rows = [
        row("a", 1, offset=1),
        row("b", 1, offset=2),
        row("a", 2, offset=3, category="Sales"),
        row("a", 3, op="delete", offset=4),
        row("b", 5, offset=5),
    ]
    assert ids(plan_rounds(rows)) == [[("a", 1), ("b", 2)], [("a", 3), ("b", 5)], [("a", 4)]]


def test_stale_rows_and_replays_inside_a_batch_are_dropped_as_one_by_one() -> None:
    newer, stale = row("a", 10, offset=7), row("a", 5, offset=3, partition=1)
    replay = row("a", 10, offset=7)
    after = row("a", 11, op="delete", offset=8)
    # Read one by one, the stale row and the replay would be ignored: here too.
    assert ids(plan_rounds([newer, stale, replay, after])) == [[("a", 7)], [("a", 8)]]


def test_same_version_is_ordered_by_offset() -> None:
    """Two records of one partition in the same millisecond: the later offset is newer."""
    first, second = row("a", 1, offset=5), row("a", 1, op="delete", offset=6)
    assert first.version == second.version
    assert ids(plan_rounds([first, second])) == [[("a", 5)], [("a", 6)]]
    assert ids(plan_rounds([second, first])) == [[("a", 6)]]  # the earlier offset is stale


def test_copy_tuple_follows_the_staging_columns() -> None:
    upsert = row(
        "o-1",
        1,
        partition=3,
        offset=9,
        latitude=48.85,
        longitude=2.35,
        profession_id=17,
        name="Dev",
        contract_type="FULL_TIME",
        published_at_ms=T0,
    )
    values = dict(zip((name for name, _ in STAGE_COLUMNS), copy_tuple(2, upsert), strict=True))
    assert values == {
        "round": 2,
        "id": "o-1",
        "is_delete": False,
        "category": "Tech",
        "continent": "Europe",
        "latitude": 48.85,
        "longitude": 2.35,
        "profession_id": 17,
        "name": "Dev",
        "contract_type": "FULL_TIME",
        "published_ms": T0,
        "event_ms": T0 + 1,
        "source_partition": 3,
        "source_offset": 9,
        "timestamp_ms": T0 + 1,
        "version": version_of(T0 + 1, 3),
    }
    delete = copy_tuple(0, row("o-1", 2, op="delete"))
    assert delete[2] is True
    assert delete[3:11] == (None,) * 8


def test_nul_characters_are_dropped_from_text() -> None:
    """PostgreSQL text cannot hold NUL (JSON can): left in, the batch would fail forever."""
    values = copy_tuple(0, row("o-\x001", 1, name="a\x00b", category="T\x00ech"))
    assert (values[1], values[3], values[8]) == ("o-1", "Tech", "ab")
    # Ids that differ only by NUL are one offer in PostgreSQL: never twice in one round.
    assert ids(plan_rounds([row("o-1", 1, offset=1), row("o-\x001", 2, offset=2)])) == [
        [("o-1", 1)],
        [("o-\x001", 2)],
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"profession_id": 1 << 63},
        {"event_ms": 1 << 50},
        {"published_at_ms": -(1 << 50)},
        {"partition": 1 << 31},
    ],
)
def test_numbers_out_of_their_columns_range_are_unstorable(change: dict[str, int]) -> None:
    fields = {**msgspec_fields(row("a", 1)), **change}
    with pytest.raises(Unstorable):
        check_storable(OfferRow(**fields))


def test_ordinary_rows_are_storable() -> None:
    ordinary = row("a", 1, profession_id=(1 << 63) - 1, published_at_ms=0)
    assert check_storable(ordinary) is ordinary


def msgspec_fields(value: OfferRow) -> dict[str, object]:
    return {name: getattr(value, name) for name in value.__struct_fields__}


def test_summary_line() -> None:
    result = SinkResult(applied=Applied(upserts=7, deletes=2, ignored=1), seconds=2.0, lag=0)
    assert summary(result, once=True) == (
        "sink: wrote 10 rows (7 upserts, 2 deletes, 1 stale/replayed ignored) in 2.0 s (5/s); lag 0"
    )
    result.skipped, result.stopped, result.lag = 3, True, None
    assert summary(result, once=False) == (
        "sink: wrote 10 rows (7 upserts, 2 deletes, 1 stale/replayed ignored), 3 records "
        "skipped (not offer rows) over 2.0 s including idle time; lag unknown — stopped "
        "(Ctrl-C or SIGTERM)"
    )
