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

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import orjson

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
        return orjson.dumps(
            {
                "action": self.action.value,
                "category": self.category,
                "continent": self.continent,
                "offer_id": self.offer_id,
                "event_id": self.event_id,
                "ts": self.ts,
            }
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
