"""``jobpulse verify``: the deltas topic, folded from the beginning, must equal Redis.

Reads every partition of the deltas topic from its start up to the high watermark taken when
the check starts, de-duplicates by ``event_id`` (the sink is at-least-once) and folds the
deltas with :func:`jobpulse.delta.fold`; compares that with the breakdown in Redis.
Meaningful once the dataflow has caught up (e.g. after ``jobpulse run --once``).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobpulse.delta import Cell, Delta, fold
from jobpulse.errors import JobpulseError
from jobpulse.settings import Settings
from jobpulse.store import Store
from jobpulse.topic_reader import read_to_end


@dataclass(frozen=True)
class Verification:
    expected: dict[Cell, int]
    actual: dict[Cell, int]
    messages: int
    distinct: int

    @property
    def mismatches(self) -> list[tuple[Cell, int, int]]:
        """(cell, from the deltas topic, in Redis) for every cell that differs."""
        cells = sorted(set(self.expected) | set(self.actual))
        return [
            (c, self.expected.get(c, 0), self.actual.get(c, 0))
            for c in cells
            if self.expected.get(c, 0) != self.actual.get(c, 0)
        ]


def read_deltas(settings: Settings) -> list[Delta]:
    """Every delta on the deltas topic up to its current end."""
    deltas: list[Delta] = []
    for message in read_to_end(settings, settings.deltas_topic):
        try:
            deltas.append(Delta.from_json(message.value()))
        except (ValueError, KeyError, TypeError) as exc:
            raise JobpulseError(
                f"{settings.deltas_topic} partition {message.partition()} offset "
                f"{message.offset()} is not a delta: {exc}"
            ) from None
    return deltas


def verify(settings: Settings) -> Verification:
    """Fold the deltas topic and read Redis."""
    store = Store.connect(settings)
    deltas = read_deltas(settings)
    return Verification(
        expected=fold(deltas),
        actual={c: n for c, n in store.cells().items() if n != 0},
        messages=len(deltas),
        distinct=len({d.event_id for d in deltas}),
    )
