"""The known scenario shared by the dataflow tests (a helper module: it holds no tests).

Every record carries the outcome it must have, written by hand from the offer contract and the
place's known continent — never computed by the code under test. :func:`expected_counts`
replays those annotations with a dict, independently of the dataflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from jobpulse.delta import Cell
from jobpulse.offer import UNKNOWN, Reason

#: Offices at well-known places: (latitude, longitude, continent).
PARIS = (48.8566, 2.3522, "Europe")
TOKYO = (35.6762, 139.6503, "Asia")
SYDNEY = (-33.8688, 151.2093, "Oceania")
CAIRO = (30.0444, 31.2357, "Africa")
SAO_PAULO = (-23.5505, -46.6333, "South America")
NEW_YORK = (40.7128, -74.0060, "North America")
HONOLULU = (21.3069, -157.8583, "North America")

PROFESSIONS_CSV = 'id,name,category_name\n1,Développeur,Tech\n2,"Vendeur, boutique",Retail\n'
PROFESSION_CATEGORIES = {1: "Tech", 2: "Retail"}

DELETE = "delete"


@dataclass(frozen=True)
class Step:
    key: bytes | None
    value: bytes | None
    #: The cell the offer must be open in afterwards, DELETE, or the DLQ reason.
    expect: Cell | str | Reason


def _upsert(
    offer_id: str, expect: Cell, place: tuple[float, float, str] | None, **fields: object
) -> Step:
    body: dict[str, object] = {"id": offer_id, **fields}
    if place is not None:
        body["latitude"], body["longitude"] = place[0], place[1]
        assert place[2] == expect.continent
    return Step(offer_id.encode(), orjson.dumps(body), expect)


def _delete(offer_id: str) -> Step:
    return Step(offer_id.encode(), orjson.dumps({"id": offer_id, "op": "delete"}), DELETE)


def _bad(key: bytes | None, value: bytes | None, reason: Reason) -> Step:
    return Step(key, value, reason)


def scenario(tag: str = "s") -> list[Step]:
    """New offers, re-sends, moves, deletes, unknown deletes and one bad record per reason."""

    def oid(n: int) -> str:
        return f"{tag}-{n}"

    published = {"published_at": "2025-11-25T09:59:30Z"}
    return [
        _upsert(oid(1), Cell("Tech", "Europe"), PARIS, category="Tech", **published),
        _upsert(oid(2), Cell("Retail", "Asia"), TOKYO, category="Retail"),
        _upsert(oid(3), Cell("Tech", "Africa"), CAIRO, profession_id=1),
        _upsert(oid(4), Cell(UNKNOWN, UNKNOWN), None),
        _upsert(oid(5), Cell("Retail", "South America"), SAO_PAULO, profession_id=2),
        _upsert(oid(6), Cell(UNKNOWN, "North America"), NEW_YORK, profession_id=999),
        _upsert(oid(7), Cell("Créa", "North America"), HONOLULU, category="Créa"),
        _bad(b"junk", b"{not json", Reason.NOT_JSON),
        # identical re-sends: nothing changes
        _upsert(oid(1), Cell("Tech", "Europe"), PARIS, category="Tech", **published),
        _upsert(oid(3), Cell("Tech", "Africa"), CAIRO, profession_id=1, name="renamed"),
        _bad(oid(8).encode(), b"[1, 2, 3]", Reason.NOT_OBJECT),
        # moves: new place, new category, both
        _upsert(oid(2), Cell("Retail", "Oceania"), SYDNEY, category="Retail"),
        _upsert(oid(3), Cell("Business", "Africa"), CAIRO, category="Business"),
        _upsert(oid(4), Cell("Tech", "Europe"), PARIS, profession_id=1),
        _bad(oid(9).encode(), b"{}", Reason.MISSING_ID),
        _bad(oid(9).encode(), orjson.dumps({"id": oid(10)}), Reason.KEY_MISMATCH),
        # deletes, a re-open, deletes of unknown offers
        _delete(oid(5)),
        _delete(oid(7)),
        _upsert(oid(7), Cell("Créa", "North America"), HONOLULU, category="Créa"),
        _delete(oid(404)),
        _delete(oid(5)),  # deleted twice: the second one is an unknown delete
        _bad(oid(1).encode(), orjson.dumps({"id": oid(1), "op": "close"}), Reason.UNKNOWN_OP),
        _bad(oid(1).encode(), orjson.dumps({"id": oid(1), "category": 7}), Reason.WRONG_TYPE),
        _bad(
            oid(1).encode(), orjson.dumps({"id": oid(1), "latitude": 1.0}), Reason.HALF_COORDINATES
        ),
        _bad(
            oid(1).encode(),
            orjson.dumps({"id": oid(1), "latitude": "north", "longitude": 2.0}),
            Reason.BAD_COORDINATE,
        ),
        _bad(
            oid(1).encode(),
            orjson.dumps({"id": oid(1), "latitude": 95.0, "longitude": 2.0}),
            Reason.COORDINATE_OUT_OF_RANGE,
        ),
        _bad(
            oid(1).encode(),
            orjson.dumps({"id": oid(1), "published_at": "last tuesday"}),
            Reason.BAD_TIMESTAMP,
        ),
        _bad(oid(1).encode(), None, Reason.NOT_JSON),
        _upsert(oid(11), Cell("Tech", "Asia"), TOKYO, category="Tech"),
    ]


@dataclass(frozen=True)
class Expected:
    counts: dict[Cell, int]
    increments: int
    decrements: int
    unknown_deletes: int
    rejected: list[Step]


def expected(steps: list[Step]) -> Expected:
    """Replay the annotations: open offers per cell, delta counts, unknown deletes, DLQ."""
    open_in: dict[bytes, Cell] = {}
    increments = decrements = unknown_deletes = 0
    rejected = []
    for step in steps:
        if isinstance(step.expect, Reason):
            rejected.append(step)
            continue
        assert step.key is not None
        old = open_in.get(step.key)
        if step.expect == DELETE:
            if old is None:
                unknown_deletes += 1
            else:
                decrements += 1
                del open_in[step.key]
            continue
        assert isinstance(step.expect, Cell)
        if old != step.expect:
            increments += 1
            decrements += old is not None
            open_in[step.key] = step.expect
    counts: dict[Cell, int] = {}
    for cell in open_in.values():
        counts[cell] = counts.get(cell, 0) + 1
    return Expected(counts, increments, decrements, unknown_deletes, rejected)


def write_professions(directory: Path) -> Path:
    path = directory / "professions.csv"
    path.write_text(PROFESSIONS_CSV, encoding="utf-8")
    return path
