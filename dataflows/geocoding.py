"""Offline reverse geocoding: coordinates → country code → continent, in batches.

``reverse_geocoder`` finds the nearest GeoNames populated place (cities1000) with a k-d tree.
Its module-level ``search`` spawns a multiprocessing pool on every call (~40 ms); here one
single-process tree (mode 1) is built once per process and queried with a whole batch of
coordinates at a time.

The continent of a country is the delta contract's table
(:data:`jobpulse.delta.CONTINENT_OF_COUNTRY`), shared with the producer's place sampler.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from jobpulse.delta import CONTINENT_OF_COUNTRY
from jobpulse.offer import UNKNOWN


class Geocoder:
    """One in-process k-d tree over reverse_geocoder's bundled cities (built lazily, once)."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _tree: ClassVar[Any] = None
    _country_of_place: ClassVar[list[str]] = []

    @classmethod
    def _load(cls) -> None:
        with cls._lock:
            if cls._tree is not None:
                return
            import reverse_geocoder

            # The library's RGeocoder is a singleton: mode=1 keeps the query in this process.
            geocoder = reverse_geocoder.RGeocoder(mode=1, verbose=False)
            cls._country_of_place = [row["cc"] for row in geocoder.locations]
            cls._tree = geocoder.tree

    @classmethod
    def countries(cls, coordinates: Sequence[tuple[float, float]]) -> list[str]:
        """The country code of the nearest populated place for each (latitude, longitude)."""
        if not coordinates:
            return []
        if cls._tree is None:
            cls._load()
        _, indices = cls._tree.query(coordinates, k=1)
        places = cls._country_of_place
        return [places[i] for i in indices.tolist()]


def continents(coordinates: Sequence[tuple[float, float]]) -> list[str]:
    """The continent of each (latitude, longitude), in one vectorised k-d tree query."""
    table = CONTINENT_OF_COUNTRY
    return [table.get(cc, UNKNOWN) for cc in Geocoder.countries(coordinates)]


def warm_up() -> None:
    """Build the k-d tree now (about a second) instead of on the first batch."""
    Geocoder.countries([(0.0, 0.0)])
