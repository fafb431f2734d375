"""The message contracts shared by every component: deltas and the Redis cell encoding."""

from __future__ import annotations

import pytest

from jobpulse.delta import Action, Cell, Delta, event_id, fold
from jobpulse.offer import Offer, Op, format_rfc3339, parse_offer
from jobpulse.store import Keys, cell_field, parse_cell_field


def _delta(action: Action, category: str, continent: str, eid: str) -> Delta:
    return Delta(action, category, continent, "o-1", eid, "2026-11-25T10:00:00.000Z")


def test_delta_round_trips_through_json() -> None:
    delta = _delta(Action.DECREMENT, "Marketing / Comm'", "South America", "t/3/7/1")
    assert Delta.from_json(delta.to_json()) == delta
    assert delta.key() == b"o-1"


def test_event_id_is_deterministic_and_distinct_per_index() -> None:
    assert event_id("offers", 3, 7, 0) == event_id("offers", 3, 7, 0)
    assert event_id("offers", 3, 7, 0) != event_id("offers", 3, 7, 1)
    assert event_id("offers", 3, 7, 0) != event_id("offers", 7, 3, 0)


def test_fold_counts_each_event_once_and_drops_zero_cells() -> None:
    deltas = [
        _delta(Action.INCREMENT, "Tech", "Europe", "a"),
        _delta(Action.INCREMENT, "Tech", "Europe", "a"),  # at-least-once duplicate
        _delta(Action.INCREMENT, "Tech", "Europe", "b"),
        _delta(Action.INCREMENT, "Créa", "Asia", "c"),
        _delta(Action.DECREMENT, "Créa", "Asia", "d"),
    ]
    assert fold(deltas) == {Cell("Tech", "Europe"): 2}


@pytest.mark.parametrize(
    "cell",
    [Cell("Tech", "Europe"), Cell('We"ird, |name\t', "Unknown"), Cell("Créa", "North America")],
)
def test_cell_field_round_trips_any_name(cell: Cell) -> None:
    assert parse_cell_field(cell_field(cell)) == cell


def test_every_key_starts_with_the_prefix() -> None:
    keys = Keys("acme")
    names = [keys.breakdown, keys.windows, keys.partitions, keys.meta, keys.updates]
    names += [keys.window_opened(60_000), keys.window_closed(60_000)]
    assert all(name.startswith("acme:") for name in names)
    assert len(set(names)) == len(names)


def test_offer_json_round_trips_through_the_parser() -> None:
    offer = Offer(
        id="o-9",
        category="Tech",
        profession_id=3,
        latitude=48.85,
        longitude=2.35,
        name='Dev, "senior"\t',
        contract_type="FULL_TIME",
        published_at_ms=1_795_600_800_123,
    )
    assert parse_offer(offer.key(), offer.to_json()) == offer
    closed = Offer(id="o-9", op=Op.DELETE)
    assert parse_offer(closed.key(), closed.to_json()) == closed


def test_rfc3339_format_is_utc_with_millis() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert format_rfc3339(1_795_600_800_123) == "2026-11-25T10:00:00.123Z"
