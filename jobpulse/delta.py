"""The delta message: what the dataflow writes to the deltas topic (the seed's topic2).

Kafka key: the offer id. Kafka value: a JSON object::

    {"action": "increment", "category": "Tech", "continent": "Europe",
     "offer_id": "o-42", "event_id": "jobpulse.offers/3/1207/0",
     "ts": "2026-11-25T10:00:00.000Z"}

- ``action``: ``increment`` (the offer is now open in this cell) or ``decrement`` (it left it).
- ``event_id``: ``<offers topic>/<partition>/<offset>/<n>``, the input record that caused
  it and the delta's index among that record's deltas (a move gives a decrement, n=0, and an
  increment, n=1). Replaying the same input after a restart gives the same ids, so a
  consumer of this at-least-once topic de-duplicates on ``event_id``.
- ``ts``: the event time (``published_at``, else the offers record's timestamp), RFC 3339 UTC.
- ``continent``: one of :data:`CONTINENTS` or ``jobpulse.offer.UNKNOWN``.

Folding every distinct delta (+1 / -1 per cell) gives the open offers per cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import orjson

from jobpulse.offer import UNKNOWN, format_rfc3339

#: Every ``continent`` value besides ``UNKNOWN``: the GeoNames continents, in the fixed order
#: every consumer (tables, dashboard columns) shows them.
CONTINENTS: tuple[str, ...] = (
    "Africa",
    "Antarctica",
    "Asia",
    "Europe",
    "North America",
    "Oceania",
    "South America",
)

#: One name per continent, for the country table below.
AFRICA, ANTARCTICA, ASIA, EUROPE, NORTH_AMERICA, OCEANIA, SOUTH_AMERICA = CONTINENTS

# The continent of a country follows GeoNames' ``countryInfo.txt`` (e.g. TR, CY's neighbours
# AM, AZ, GE → Asia; RU → Europe; EG → Africa; PA → North America; TL → Oceania; the Antarctic
# territories AQ, BV, GS, HM, TF → Antarctica). It covers every ISO 3166-1 code plus XK
# (Kosovo), so every code the geocoder's bundled city file can return is mapped.

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
    """The continent of a country code; ``UNKNOWN`` for a code not in the table."""
    return CONTINENT_OF_COUNTRY.get(country_code, UNKNOWN)


class Cell(NamedTuple):
    """One cell of the breakdown."""

    category: str
    continent: str


class Action(StrEnum):
    INCREMENT = "increment"
    DECREMENT = "decrement"

    @property
    def sign(self) -> int:
        return 1 if self is Action.INCREMENT else -1


@dataclass(frozen=True, slots=True)
class Delta:
    action: Action
    category: str
    continent: str
    offer_id: str
    event_id: str
    ts: str

    @property
    def cell(self) -> Cell:
        return Cell(self.category, self.continent)

    def key(self) -> bytes:
        return self.offer_id.encode()

    def to_json(self) -> bytes:
        return delta_json(
            self.action.value, self.category, self.continent, self.offer_id, self.event_id, self.ts
        )

    @classmethod
    def from_json(cls, value: bytes) -> Delta:
        body = orjson.loads(value)
        return cls(
            action=Action(body["action"]),
            category=body["category"],
            continent=body["continent"],
            offer_id=body["offer_id"],
            event_id=body["event_id"],
            ts=body["ts"],
        )


def delta_json(
    action: str, category: str, continent: str, offer_id: str, event_id: str, ts: str
) -> bytes:
    """The Kafka value of one delta: the one encoder, for :meth:`Delta.to_json` and for the
    dataflow, which calls it once per delta without building a :class:`Delta` (hot path:
    one dict, one ``orjson.dumps``). ``action`` is an :class:`Action` value."""
    return orjson.dumps(
        {
            "action": action,
            "category": category,
            "continent": continent,
            "offer_id": offer_id,
            "event_id": event_id,
            "ts": ts,
        }
    )


class DeltaEncoder:
    """The Kafka messages of the deltas one offers topic's records cause: the same bytes as
    :meth:`Delta.key` and :func:`delta_json` (a test holds them equal), assembled from pieces
    encoded once.

    The dataflow writes one delta per open/close/move, so this is its hot path: per delta it
    JSON-encodes only the offer id; the head up to ``"offer_id":`` is encoded once per
    action and cell, the event id's topic once, each event-time second once.
    """

    #: Formatted seconds kept (over a day's worth); then the memo starts afresh.
    MAX_SECONDS = 100_000
    #: ``.mmmZ"}``: the end of a value, for each millisecond of its timestamp.
    _ENDS = tuple(f'.{millis:03d}Z"}}'.encode() for millis in range(1000))

    def __init__(self, topic: str) -> None:
        # '"topic/' without its closing quote: the partition, offset and index follow.
        self._event_id_head = b',"event_id":' + orjson.dumps(f"{topic}/")[:-1]
        self._heads: tuple[dict[Cell, bytes], dict[Cell, bytes]] = ({}, {})
        self._seconds: dict[int, bytes] = {}

    def messages(
        self, deltas: Iterable[tuple[int, Cell, str, int, int, int, int]]
    ) -> list[tuple[bytes, bytes, None]]:
        """(key, value, no headers) of each (sign, cell, offer id, partition, offset, index,
        event time ms): ``sign`` +1 increment, -1 decrement; the ``index``-th delta of the
        record at ``partition``/``offset``."""
        dumps, ends, event_id_head = orjson.dumps, self._ENDS, self._event_id_head
        increments, decrements = self._heads
        seconds_memo = self._seconds
        out: list[tuple[bytes, bytes, None]] = []
        append = out.append
        for sign, cell, offer_id, partition, offset, index, event_ms in deltas:
            head = (increments if sign > 0 else decrements).get(cell)
            if head is None:
                head = self._head(sign, cell)
            second = seconds_memo.get(event_ms // 1000)
            if second is None:
                second = self._second(event_ms // 1000)
            value = b"%s%s%s%d/%d/%d%s%s" % (
                head,
                dumps(offer_id),
                event_id_head,
                partition,
                offset,
                index,
                second,
                ends[event_ms % 1000],
            )
            append((offer_id.encode(), value, None))
        return out

    def _head(self, sign: int, cell: Cell) -> bytes:
        action = Action.INCREMENT if sign > 0 else Action.DECREMENT
        whole = delta_json(action.value, cell[0], cell[1], "", "", "")
        head = whole[: whole.index(b'"offer_id":') + len(b'"offer_id":')]
        self._heads[0 if sign > 0 else 1][Cell(*cell)] = head
        return head

    def _second(self, seconds: int) -> bytes:
        if len(self._seconds) >= self.MAX_SECONDS:
            self._seconds.clear()
        text = '","ts":"' + format_rfc3339(seconds * 1000)[:-5]
        second = self._seconds[seconds] = text.encode()
        return second


def event_id(topic: str, partition: int, offset: int, index: int) -> str:
    """The deterministic id of the ``index``-th delta caused by one offers record."""
    return f"{topic}/{partition}/{offset}/{index}"


def fold(deltas: list[Delta]) -> dict[Cell, int]:
    """Open offers per cell from deltas, counting each ``event_id`` once; zero cells dropped."""
    seen: set[str] = set()
    counts: dict[Cell, int] = {}
    for delta in deltas:
        if delta.event_id in seen:
            continue
        seen.add(delta.event_id)
        counts[delta.cell] = counts.get(delta.cell, 0) + delta.action.sign
    return {cell: n for cell, n in counts.items() if n != 0}
