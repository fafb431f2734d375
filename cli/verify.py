"""``jobpulse verify``: the deltas topic, folded from the beginning, must equal Redis; with
``--postgres``, the open offers in PostgreSQL must too.

Reads every partition of the deltas topic from its start up to the high watermark taken when
the check starts, de-duplicates by ``event_id`` (the sink is at-least-once) and folds the
deltas with :func:`jobpulse.delta.fold`; compares that with the breakdown in Redis.
``--postgres`` also runs the design note's query (open offers grouped by category and
continent, :mod:`jobpulse.postgres.breakdown`) and compares it with Redis. Meaningful once the
dataflow and the sink have caught up (e.g. after ``jobpulse run --once`` and ``jobpulse sink
--once``). It lives at the top because it reads what three components wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

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


def verify_command(
    ctx: typer.Context,
    postgres: Annotated[
        bool,
        typer.Option("--postgres", help="Also compare the open offers in PostgreSQL with Redis."),
    ] = False,
) -> None:
    """Fold the deltas topic (de-duplicated by event_id) and compare with Redis.

    Prints the mismatching cells and exits 1 if any; exits 0 if identical.
    """
    settings: Settings = ctx.obj
    result = verify(settings)
    for cell, expected, actual in result.mismatches:
        typer.echo(
            f"mismatch {cell.category} × {cell.continent}: deltas topic {expected}, Redis {actual}"
        )
    summary = (
        f"{result.messages} deltas read ({result.distinct} distinct event ids), "
        f"{len(result.expected)} non-zero cells, total {sum(result.expected.values())}"
    )
    failed = [f"{len(result.mismatches)} cell(s) differ"] if result.mismatches else []
    if postgres:
        differ = _compare_postgres(settings, result.actual)
        if differ:
            failed.append(f"{differ} cell(s) differ between PostgreSQL and Redis")
        summary += "; PostgreSQL " + ("differs" if differ else "equals Redis")
    if failed:
        raise JobpulseError(f"{'; '.join(failed)}; {summary}")
    typer.echo(f"ok: Redis equals the folded deltas topic; {summary}")


def _compare_postgres(settings: Settings, redis: dict[Cell, int]) -> int:
    """Print every cell where PostgreSQL's open offers differ from Redis; return how many."""
    from jobpulse import pg
    from jobpulse.offer_row import sink_group
    from jobpulse.postgres.breakdown import open_counts
    from jobpulse.topics import group_lag

    if not settings.rows_topic:
        raise JobpulseError("--postgres needs JOBPULSE_ROWS_TOPIC (the rows the sink reads)")
    lag = group_lag(settings, sink_group(settings.rows_topic), settings.rows_topic)
    if lag:
        typer.echo(f"note: the PostgreSQL sink has {lag} row(s) still to write")
    with pg.connect(settings) as conn:
        database = open_counts(conn)
    differ = 0
    for cell in sorted(set(database) | set(redis)):
        if database.get(cell, 0) != redis.get(cell, 0):
            differ += 1
            typer.echo(
                f"mismatch {cell.category} × {cell.continent}: PostgreSQL "
                f"{database.get(cell, 0)}, Redis {redis.get(cell, 0)}"
            )
    return differ
