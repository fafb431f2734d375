"""``jobpulse sink``: the offer rows into PostgreSQL."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from jobpulse import processes
from jobpulse.logs import LogFormatOption, VerboseOption
from jobpulse.settings import Settings


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``app``."""
    app.command("sink")(sink)


def sink(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Stop at the end of the rows topic as of the start.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(help="Rows per batch (one transaction, one offsets commit).", min=1)
    ] = 5000,
    verbose: VerboseOption = False,
    log_format: LogFormatOption = None,
) -> None:
    """Keep every offer in PostgreSQL: the rows topic (JOBPULSE_ROWS_TOPIC) → table offers.

    Resumes from its consumer group's committed offsets; a batch is committed to Kafka only
    after PostgreSQL committed it, and replaying one changes nothing. Waits out a PostgreSQL
    outage (JOBPULSE_OUTAGE_LIMIT_SECONDS). Ctrl-C finishes the batch in hand and stops.
    Shows its progress on stderr and, with JOBPULSE_METRICS_PORT, serves Prometheus metrics
    (docs/operations.md).
    """
    processes.defer_stop_signals()  # Ctrl-C while connecting: a clean stop
    from jobpulse import logs, metrics, pg
    from jobpulse.offer_row import sink_group

    from .sink import Sink, open_writer, rows_partitions, summary

    settings: Settings = ctx.obj.with_overrides(log_format=log_format)
    logs.setup(settings, verbose=verbose)
    partitions = rows_partitions(settings)
    metrics.serve(settings, "sink")
    writer = open_writer(settings)
    try:
        runner = Sink(settings, writer, partitions, batch_size=batch_size, once=once)
    except BaseException:
        writer.close()
        raise
    logging.getLogger("jobpulse.sink").info(
        "%s (%d partitions, group %s) → PostgreSQL %s, table offers; lag %d%s",
        settings.rows_topic,
        len(partitions),
        sink_group(settings.rows_topic or ""),
        pg.display(settings),
        runner.lag(),
        " (--once)" if once else "",
    )

    def say() -> None:
        logging.getLogger("jobpulse.sink").info(
            "stopping: finishing the batch in hand (Ctrl-C again to abort)"
        )

    with processes.stop_signals(announce=say, interrupt_on_second=True) as stop:
        result = runner.run(stop)
    typer.echo(summary(result, once=once))
