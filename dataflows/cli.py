"""``jobpulse run``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import orjson
import typer

from jobpulse.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``app``."""
    app.command("run")(run)


def _cluster_from_env() -> tuple[int | None, str | None]:
    """Process id and addresses of a Bytewax cluster member (e.g. a StatefulSet pod)."""
    addresses = os.environ.get("BYTEWAX_ADDRESSES")
    process_id = os.environ.get("BYTEWAX_PROCESS_ID")
    pod, statefulset = (
        os.environ.get("BYTEWAX_POD_NAME"),
        os.environ.get("BYTEWAX_STATEFULSET_NAME"),
    )
    if process_id is None and pod and statefulset and pod.startswith(statefulset + "-"):
        process_id = pod[len(statefulset) + 1 :]
    try:
        return (int(process_id) if process_id is not None else None), addresses
    except ValueError:
        raise UsageError(f"cannot tell the process id from {process_id!r}") from None


def run(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(help="Worker threads per process.", min=1)] = 1,
    processes: Annotated[
        int, typer.Option(help="Local processes forming one cluster on loopback.", min=1)
    ] = 1,
    recovery_dir: Annotated[
        Path | None,
        typer.Option(
            help="Recovery store (default: <state dir>/recovery/<offers topic>@<redis prefix>).",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Stop at the end of the offers topic as of the start.")
    ] = False,
    recount: Annotated[
        bool,
        typer.Option(
            "--recount",
            help="With a new recovery store: replace the counts already under the Redis "
            "prefix (cleared, then recounted from offset 0).",
        ),
    ] = False,
    snapshot_interval: Annotated[
        float, typer.Option(help="Seconds between state snapshots (= max replay).", min=0.1)
    ] = 5.0,
    process_id: Annotated[
        int | None,
        typer.Option(help="Cluster member: this process's index (env BYTEWAX_PROCESS_ID).", min=0),
    ] = None,
    addresses: Annotated[
        str | None,
        typer.Option(help="Cluster member: 'host:port;host:port...' (env BYTEWAX_ADDRESSES)."),
    ] = None,
    end_offsets: Annotated[str | None, typer.Option(hidden=True)] = None,
    launched: Annotated[bool, typer.Option(hidden=True)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the dataflow: offers topic → deltas topic, DLQ topic and live counts in Redis.

    Resumes from the recovery store after a stop or crash. Ctrl-C stops cleanly.
    """
    from .runner import RunOptions
    from .runner import run as run_dataflow

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    env_process_id, env_addresses = _cluster_from_env()
    process_id = process_id if process_id is not None else env_process_id
    addresses = addresses or env_addresses
    address_list = [a.strip() for a in addresses.split(";") if a.strip()] if addresses else None
    if address_list is not None and processes > 1:
        raise UsageError("--processes launches a local cluster; do not combine with --addresses")
    parsed_end = None
    if end_offsets is not None:
        try:
            parsed_end = {int(p): int(o) for p, o in orjson.loads(end_offsets).items()}
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            raise UsageError("--end-offsets must be a JSON object partition → offset") from None
    run_dataflow(
        ctx.obj,
        RunOptions(
            workers=workers,
            processes=processes,
            recovery_dir=recovery_dir,
            once=once,
            snapshot_interval_s=snapshot_interval,
            process_id=process_id if address_list else None,
            addresses=address_list,
            end_offsets=parsed_end,
            launched=launched,
            recount=recount,
        ),
    )
