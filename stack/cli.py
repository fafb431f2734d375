"""``jobpulse stack up|down|status|fetch`` and ``jobpulse topics create``."""

from __future__ import annotations

from typing import Annotated

import typer

from jobpulse.settings import Settings

stack_app = typer.Typer(
    name="stack",
    help="The local Kafka (KRaft, native Java), Redis and PostgreSQL: start, stop, inspect.",
    no_args_is_help=True,
)
topics_app = typer.Typer(
    name="topics",
    help="The offers, deltas and dead-letter topics.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``stack`` and ``topics`` to ``app``."""
    app.add_typer(stack_app)
    app.add_typer(topics_app)


@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Start Kafka, Redis and PostgreSQL unless they already answer; wait until all are ready.

    Reuses a healthy running stack (and any Kafka/Redis/PostgreSQL already reachable at the
    configured addresses); a PostgreSQL of this state dir gets the URL's user and database.
    Prints the startup time and the versions.
    """
    from jobpulse.stack import lifecycle

    settings: Settings = ctx.obj
    states, seconds = lifecycle.up(settings)
    for state in states:
        typer.echo(state.line())
    versions = ", ".join(f"{s.name} {s.version}" for s in states)
    if all(s.state != lifecycle.STARTED for s in states):
        typer.echo(f"stack already running ({versions}); checked in {seconds:.1f}s")
    else:
        typer.echo(f"stack up in {seconds:.1f}s ({versions}); state in {settings.state_dir}")


@stack_app.command("down")
def stack_down(ctx: typer.Context) -> None:
    """Stop the Kafka, Redis and PostgreSQL processes ``stack up`` started from this state dir.

    PostgreSQL gets a fast shutdown (``pg_ctl stop -m fast``: open sessions are ended).
    """
    from jobpulse.stack import lifecycle

    for state in lifecycle.down(ctx.obj):
        note = {
            lifecycle.EXTERNAL: "left running (not started from this state dir)",
            lifecycle.DOWN: "was not running",
        }.get(state.state, "")
        typer.echo(f"{state.line()}  {note}".rstrip())


@stack_app.command("status")
def stack_status(ctx: typer.Context) -> None:
    """Report each service: up/down, version, address, pid. Exit code 3 if any is down.

    A pid is shown only for a process this state dir started that serves the configured
    address; a service refusing the configured credentials is "auth failed" (one line on
    stderr says which user at which address).
    """
    from jobpulse.stack import lifecycle

    states = lifecycle.status(ctx.obj)
    for state in states:
        typer.echo(state.line())
    for state in states:
        if state.problem:
            typer.secho(f"jobpulse: {state.problem}", err=True, fg="red")
    if not all(s.up for s in states):
        raise typer.Exit(code=3)


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Download the Kafka jars with Maven into the cache folder (skipped when present)."""
    from jobpulse.stack import kafka

    present = kafka.libs_present()
    libs = kafka.fetch_libs()
    typer.echo(
        f"kafka {kafka.KAFKA_VERSION} jars {'already in' if present else 'fetched to'} {libs}"
    )


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create the offers, deltas and DLQ topics with JOBPULSE_PARTITIONS partitions.

    Idempotent; an existing topic with another partition count is an error (exit 1), except
    an offers topic grown with `jobpulse topics grow`.
    """
    from jobpulse import topics

    settings: Settings = ctx.obj
    outcomes = topics.ensure_topics(settings)
    counts = topics.topic_partitions(settings, outcomes)
    for name, outcome in outcomes.items():
        typer.echo(f"{name:<40} {outcome:<8} {counts.get(name, settings.partitions)} partitions")


@topics_app.command("grow")
def topics_grow(
    ctx: typer.Context,
    partitions: Annotated[
        int, typer.Option("--partitions", "-p", help="The new partition count.", min=1)
    ],
) -> None:
    """Grow the offers topic to --partitions partitions: the first step of scaling out.

    Kafka cannot remove partitions: a smaller count is refused (exit 1).

    A live `jobpulse run` notices the new partitions and restarts itself to read them.

    For more readers, restart it with more --workers or --processes on the same store.

    The whole procedure: docs/scaling.md.
    """
    from jobpulse import topics

    settings: Settings = ctx.obj
    before = topics.grow_partitions(settings, partitions)
    if before == partitions:
        typer.echo(f"{settings.offers_topic} already has {partitions} partitions")
    else:
        typer.echo(f"{settings.offers_topic} grown from {before} to {partitions} partitions")
