"""The ``jobpulse`` command: global settings flags, then the commands of every component.

Each component owns its commands in its own ``cli.py`` and registers them here, next to the
ones that span components (``breakdown``, ``verify``, ``status``, ``demo``); heavy imports
(bytewax, panel) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from jobpulse import settings as settings_module
from jobpulse.cli import kubernetes
from jobpulse.cli.breakdown import breakdown
from jobpulse.cli.demo import demo
from jobpulse.cli.status import status
from jobpulse.cli.verify import verify_command
from jobpulse.dashboard import cli as dashboard_cli
from jobpulse.dataflows import cli as dataflows_cli
from jobpulse.errors import JobpulseError, error_line
from jobpulse.postgres import cli as postgres_cli
from jobpulse.producer import cli as producer_cli
from jobpulse.stack import cli as stack_cli

app = typer.Typer(
    name="jobpulse",
    help="Live open job offers per category × continent: Kafka → Bytewax → Redis → Panel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _opt(name: str, field: FieldInfo) -> inspect.Parameter:
    """The global flag of setting ``name`` (``--name-with-dashes``, default ``None``: not
    given), its help the field's description."""
    option = typer.Option(
        help=f"{field.description} (env {settings_module.env_var(name)})", show_default=False
    )
    flag_type = Annotated[field.annotation | None, option]
    return inspect.Parameter(name, _KEYWORD, default=None, annotation=flag_type)


def global_options(ctx: typer.Context, **flags: Any) -> None:
    """Settings come from JOBPULSE_* environment variables; these flags override them."""
    ctx.obj = settings_module.load(**flags)


# The flags are not listed here: each field of Settings marked CLI_FLAG is one, its name, type
# and help written once, in jobpulse/settings.py. Typer reads a callback's parameters from its
# signature, so the callback gets one built from those fields (and passes them all to load).
global_options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *(_opt(name, field) for name, field in settings_module.flag_fields().items()),
    ]
)
app.callback()(global_options)


for component in (stack_cli, producer_cli, dataflows_cli, postgres_cli):
    component.register(app)
app.command("breakdown")(breakdown)
app.command("verify")(verify_command)
app.command("status")(status)
dashboard_cli.register(app)
app.command("demo")(demo)
kubernetes.register(app)


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
