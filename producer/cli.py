"""``jobpulse produce``: import a job-offer CSV or generate live synthetic traffic."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jobpulse import processes
from jobpulse.errors import JobpulseError, UsageError
from jobpulse.settings import Settings

if TYPE_CHECKING:
    from jobpulse.offer import Offer
    from jobpulse.producer.delivery import Outcome
    from jobpulse.producer.synthetic import Lifecycle

#: Malformed rows printed one by one before the rest are only counted.
MAX_ROW_ERRORS_SHOWN = 20


def register(app: typer.Typer) -> None:
    """Add ``produce`` to ``app``."""
    app.command("produce")(produce)


def produce(
    ctx: typer.Context,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="Import this job-offer CSV (WTTJ format).", metavar="FILE"),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="CSV: use this column as the offer id (default: stable content ids)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="CSV: abort before sending if any row is malformed.")
    ] = False,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Generate realistic live traffic.")
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(help="Records per second (default: as fast as possible).", min=0.001),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Synthetic: stop after N records.", min=1, metavar="N")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Synthetic: stop after S seconds.", min=0.001, metavar="S"),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Synthetic: random seed (same seed → same stream; default: random)."),
    ] = None,
    resend_share: Annotated[
        float, typer.Option(help="Synthetic: share of later records re-sending an open offer.")
    ] = 0.05,
    move_share: Annotated[
        float,
        typer.Option(
            help="Synthetic: share of later records moving an open offer (place/category)."
        ),
    ] = 0.05,
    close_share: Annotated[
        float, typer.Option(help="Synthetic: share of later records closing an open offer.")
    ] = 0.20,
) -> None:
    """Send job offers to the offers topic, keyed by offer id.

    Either --csv FILE (one upsert per row; malformed rows are reported with their line number
    and skipped, or abort everything with --strict) or --synthetic (offices at populated places,
    skewed categories, offers re-sent, moved and closed). Ctrl-C stops, flushes and prints the
    summary. Exits non-zero if any record could not be delivered.
    """
    processes.defer_stop_signals()  # Ctrl-C while loading places or connecting: a clean stop
    settings: Settings = ctx.obj
    if (csv_file is None) == (not synthetic):
        raise UsageError("give exactly one source: --csv FILE or --synthetic")
    if csv_file is not None:
        synthetic_only = {
            "--count": count,
            "--duration": duration,
            "--seed": seed,
        }
        given = [flag for flag, value in synthetic_only.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --synthetic")
        _produce_csv(settings, csv_file, id_column=id_column, strict=strict, rate=rate)
        return
    if id_column is not None or strict:
        raise UsageError("--id-column and --strict only apply to --csv")
    if count is not None and duration is not None:
        raise UsageError("give --count or --duration, not both")
    from jobpulse.producer.synthetic import Lifecycle

    lifecycle = Lifecycle(resend_share=resend_share, move_share=move_share, close_share=close_share)
    _produce_synthetic(
        settings,
        lifecycle=lifecycle,
        seed=seed if seed is not None else random.SystemRandom().randrange(1_000_000),
        rate=rate,
        count=count,
        duration=duration,
    )


def _produce_csv(
    settings: Settings, path: Path, *, id_column: str | None, strict: bool, rate: float | None
) -> None:
    from jobpulse.producer.csv_import import CsvRow, decode_lines, read_rows
    from jobpulse.producer.delivery import OfferSender, default_progress, format_rate, pump

    began = time.monotonic()
    try:
        with path.open("rb") as stream:
            try:
                parsed = list(read_rows(decode_lines(stream), id_column=id_column))
            except UsageError as exc:
                raise UsageError(f"{path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = [item.offer for item in parsed if isinstance(item, CsvRow)]
    errors = [item for item in parsed if not isinstance(item, CsvRow)]
    for error in errors[:MAX_ROW_ERRORS_SHOWN]:
        typer.echo(f"{path}: {error}" + ("" if strict else " (skipped)"), err=True)
    if len(errors) > MAX_ROW_ERRORS_SHOWN:
        typer.echo(f"{path}: ... and {len(errors) - MAX_ROW_ERRORS_SHOWN} more", err=True)
    if errors and strict:
        raise JobpulseError(f"{path}: {len(errors)} malformed row(s); nothing sent (--strict)")

    sender = OfferSender(settings)
    sender.check_topic()
    outcome = pump(rows, sender, rate=rate, total=len(rows), progress=default_progress())
    typer.echo(
        f"{path}: {len(parsed)} rows, {outcome.delivered} sent, {len(errors)} skipped (malformed), "
        f"{outcome.not_delivered} failed → {settings.offers_topic} "
        f"in {time.monotonic() - began:.2f}s ({format_rate(outcome.throughput)} records/s)"
        + (" — interrupted (Ctrl-C or SIGTERM)" if outcome.interrupted else "")
    )
    _fail_if_undelivered(outcome)
    if outcome.interrupted:
        raise JobpulseError(
            f"interrupted after {outcome.produced} of {len(rows)} rows; run the import "
            "again to send the rest (ids are stable, nothing is counted twice)"
        )


def _produce_synthetic(
    settings: Settings,
    *,
    lifecycle: Lifecycle,
    seed: int,
    rate: float | None,
    count: int | None,
    duration: float | None,
) -> None:
    from jobpulse.producer.delivery import OfferSender, default_progress, format_rate, pump
    from jobpulse.producer.places import load_places
    from jobpulse.producer.synthetic import SyntheticStream

    sender = OfferSender(settings)
    sender.check_topic()
    stream = SyntheticStream(load_places(), seed=seed, lifecycle=lifecycle)
    kinds: dict[str, int] = {}

    def offers() -> Iterator[Offer]:
        records = iter(stream) if count is None else islice(stream, count)
        for record in records:
            kinds[record.kind] = kinds.get(record.kind, 0) + 1
            yield record.offer

    limit = f"{count} records" if count else f"{duration:g}s" if duration else "until Ctrl-C"
    pace = f"{rate:g} records/s" if rate else "max rate"
    typer.echo(f"synthetic: seed {seed}, {pace}, {limit} → {settings.offers_topic}", err=True)
    outcome = pump(
        offers(),
        sender,
        rate=rate,
        duration=duration,
        total=count or (math.ceil(rate * duration) if rate and duration else None),
        progress=default_progress(),
    )
    mix = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
    typer.echo(
        f"synthetic seed {seed}: {outcome.delivered} sent ({mix}), "
        f"{outcome.not_delivered} failed → {settings.offers_topic} in {outcome.seconds:.2f}s "
        f"({format_rate(outcome.rate)} records/s sent, "
        f"{format_rate(outcome.throughput)}/s acknowledged)"
        + (" — stopped (Ctrl-C or SIGTERM)" if outcome.interrupted else "")
    )
    _fail_if_undelivered(outcome)


def _fail_if_undelivered(outcome: Outcome) -> None:
    """Raise (→ one line, non-zero exit) if any record was not confirmed by Kafka."""
    if outcome.fatal:
        raise JobpulseError(f"the Kafka producer stopped on a fatal error: {outcome.fatal}")
    if outcome.not_delivered:
        reasons = "; ".join(f"{text} ({n})" for text, n in outcome.errors.most_common(3))
        if outcome.unconfirmed:
            reasons = "; ".join(
                filter(None, [reasons, f"{outcome.unconfirmed} unconfirmed at exit"])
            )
        raise JobpulseError(
            f"{outcome.not_delivered} of {outcome.produced} records failed: {reasons}"
        )
