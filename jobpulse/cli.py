"""The ``jobpulse`` command: global settings flags, then one sub-command per component.

Each component owns its commands in its own ``cli.py`` and registers them here; heavy
imports (bytewax, panel) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from jobpulse import settings as settings_module
from jobpulse.dashboard import cli as dashboard_cli
from jobpulse.dataflows import cli as dataflows_cli
from jobpulse.errors import JobpulseError, error_line
from jobpulse.producer import cli as producer_cli
from jobpulse.stack import cli as stack_cli

app = typer.Typer(
    name="jobpulse",
    help="Live open job offers per category × continent: Kafka → Bytewax → Redis → Panel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _opt(env: str, help_text: str) -> typer.models.OptionInfo:
    return typer.Option(help=f"{help_text} (env JOBPULSE_{env})", show_default=False)


@app.callback()
def global_options(
    ctx: typer.Context,
    kafka_bootstrap: Annotated[str | None, _opt("KAFKA_BOOTSTRAP", "Kafka brokers.")] = None,
    redis_url: Annotated[str | None, _opt("REDIS_URL", "Redis URL.")] = None,
    offers_topic: Annotated[str | None, _opt("OFFERS_TOPIC", "Offers topic (topic1).")] = None,
    deltas_topic: Annotated[str | None, _opt("DELTAS_TOPIC", "Deltas topic (topic2).")] = None,
    dlq_topic: Annotated[str | None, _opt("DLQ_TOPIC", "Dead-letter topic.")] = None,
    partitions: Annotated[int | None, _opt("PARTITIONS", "Partitions per topic.")] = None,
    redis_prefix: Annotated[str | None, _opt("REDIS_PREFIX", "Redis key prefix.")] = None,
    state_dir: Annotated[Path | None, _opt("STATE_DIR", "Local data, logs, pids.")] = None,
    professions: Annotated[Path | None, _opt("PROFESSIONS", "Professions CSV.")] = None,
    window_seconds: Annotated[int | None, _opt("WINDOW_SECONDS", "Window length, s.")] = None,
) -> None:
    """Settings come from JOBPULSE_* environment variables; these flags override them."""
    ctx.obj = settings_module.load(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        offers_topic=offers_topic,
        deltas_topic=deltas_topic,
        dlq_topic=dlq_topic,
        partitions=partitions,
        redis_prefix=redis_prefix,
        state_dir=state_dir,
        professions=professions,
        window_seconds=window_seconds,
    )


for component in (stack_cli, producer_cli, dataflows_cli, dashboard_cli):
    component.register(app)


def main() -> None:
    """Console entry point: user-facing errors become one line on stderr and an exit code."""
    try:
        app()
    except settings_module.SettingsError as exc:
        typer.secho(f"jobpulse: {exc}", err=True, fg="red")
        sys.exit(2)
    except JobpulseError as exc:
        typer.secho(error_line(exc), err=True, fg="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("jobpulse: interrupted", err=True)
        sys.exit(130)
