"""``jobpulse dashboard``."""

from __future__ import annotations

from typing import Annotated

import typer

from jobpulse.logs import LogFormatOption
from jobpulse.settings import Settings


def register(app: typer.Typer) -> None:
    """Add ``dashboard`` to ``app``."""
    app.command("dashboard")(dashboard)


def dashboard(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Listen address (env JOBPULSE_DASHBOARD_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port, 0 = any free one (env JOBPULSE_DASHBOARD_PORT).", min=0, max=65535
        ),
    ] = None,
    show: Annotated[bool, typer.Option("--show/--no-show", help="Open a browser tab.")] = False,
    processes: Annotated[
        int,
        typer.Option(
            help="Server processes sharing the port, each with its own Redis reader "
            "(one per CPU core serves the most page loads at once).",
            min=1,
            max=64,
        ),
    ] = 1,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the live dashboard (and GET /api/breakdown) until Ctrl-C.

    Reads Redis through one shared reader per process and pushes every change to all open
    pages within a second. Basic auth when JOBPULSE_DASHBOARD_AUTH=user:password is set.
    With JOBPULSE_METRICS_PORT, serves Prometheus metrics (docs/operations.md).
    """
    from jobpulse import logs
    from jobpulse.dashboard import server

    settings: Settings = ctx.obj.with_overrides(
        dashboard_host=host, dashboard_port=port, log_format=log_format
    )
    logs.setup(settings)
    server.serve(
        settings,
        processes=processes,
        show=show,
        on_ready=lambda url: typer.echo(f"dashboard at {url} (API: {url}api/breakdown)"),
    )
