"""``jobpulse run``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from jobpulse.errors import JobpulseError, UsageError
from jobpulse.logs import LogFormatOption, VerboseOption
from jobpulse.settings import Settings


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``app``."""
    app.command("run")(run)


#: How a cluster member's peers are addressed when only the cluster size is given
#: (``BYTEWAX_REPLICAS``): ``{pod}`` is peer *i*'s pod name (``{statefulset}-{index}``), which
#: resolves through the StatefulSet's headless Service of the same name (the manifests keep
#: both names equal, under any kustomize ``namePrefix``).
DEFAULT_ADDRESS_TEMPLATE = "{pod}.{statefulset}:2101"

#: How long a member waits for every peer's name to resolve before it gives up: pods of a
#: StatefulSet start in parallel, and a peer that is still missing after this is not coming
#: (its StatefulSet has fewer pods than ``BYTEWAX_REPLICAS``).
PEER_WAIT_S = 300.0


def _cluster_from_env(
    environ: Mapping[str, str] | None = None,
) -> tuple[int | None, str | None]:
    """Process id and ``;``-separated addresses of a Bytewax cluster member (a StatefulSet pod).

    The cluster size is **one** value, ``BYTEWAX_REPLICAS`` (as in Bytewax's Helm chart): with
    it, the peers are derived from ``BYTEWAX_ADDRESS_TEMPLATE`` (default
    :data:`DEFAULT_ADDRESS_TEMPLATE`) and this pod's ordinal, taken from ``BYTEWAX_POD_NAME``
    (``<statefulset>-<ordinal>``; ``BYTEWAX_STATEFULSET_NAME`` only checks it). An explicit
    ``BYTEWAX_ADDRESSES`` list (with ``BYTEWAX_PROCESS_ID`` or the pod name) still works and
    wins. Nothing set: ``(None, None)``, not a cluster member.
    """
    env = os.environ if environ is None else environ
    addresses = env.get("BYTEWAX_ADDRESSES") or None
    replicas = env.get("BYTEWAX_REPLICAS") or None
    pod = env.get("BYTEWAX_POD_NAME") or None
    statefulset, ordinal = _pod_ordinal(pod, env.get("BYTEWAX_STATEFULSET_NAME") or None)
    process_id = _integer("BYTEWAX_PROCESS_ID", env.get("BYTEWAX_PROCESS_ID"))
    if process_id is None:
        process_id = ordinal
    if addresses is None and replicas is not None:
        count = _integer("BYTEWAX_REPLICAS", replicas)
        if count is None or count < 1:
            raise UsageError(f"BYTEWAX_REPLICAS must be at least 1, got {replicas!r}")
        if process_id is None or statefulset is None:
            raise UsageError(
                "BYTEWAX_REPLICAS needs BYTEWAX_POD_NAME=<statefulset>-<ordinal> "
                "(the pod's name, from the downward API)"
            )
        if process_id >= count:
            raise UsageError(
                f"pod {pod} has ordinal {process_id}, but BYTEWAX_REPLICAS is {count}: the "
                "StatefulSet's replicas and BYTEWAX_REPLICAS differ (scaled with `kubectl "
                "scale`?); rescale with the steps `jobpulse k8s rescale N` prints"
            )
        template = env.get("BYTEWAX_ADDRESS_TEMPLATE") or DEFAULT_ADDRESS_TEMPLATE
        addresses = ";".join(peer_addresses(template, statefulset, count))
    return process_id, addresses


def peer_addresses(template: str, statefulset: str, count: int) -> list[str]:
    """``host:port`` of every member 0..count-1 from an address template with the fields
    ``{statefulset}``, ``{index}`` and ``{pod}`` (= ``{statefulset}-{index}``)."""
    try:
        return [
            template.format(statefulset=statefulset, index=i, pod=f"{statefulset}-{i}")
            for i in range(count)
        ]
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"BYTEWAX_ADDRESS_TEMPLATE {template!r} is not a template of {{statefulset}}, "
            f"{{index}} and {{pod}} ({exc!r})"
        ) from None


def _pod_ordinal(pod: str | None, statefulset: str | None) -> tuple[str | None, int | None]:
    """(StatefulSet name, ordinal) of a pod named ``<statefulset>-<ordinal>``."""
    if pod is None:
        return statefulset, None
    if statefulset is not None:
        if not pod.startswith(statefulset + "-"):
            raise UsageError(
                f"BYTEWAX_POD_NAME {pod!r} is not a pod of StatefulSet {statefulset!r} "
                "(BYTEWAX_STATEFULSET_NAME)"
            )
        return statefulset, _integer("BYTEWAX_POD_NAME's ordinal", pod[len(statefulset) + 1 :])
    name, _, ordinal = pod.rpartition("-")
    if not name:
        raise UsageError(f"cannot tell the process id from BYTEWAX_POD_NAME {pod!r}")
    return name, _integer("BYTEWAX_POD_NAME's ordinal", ordinal)


def _integer(what: str, value: str | None) -> int | None:
    """``int(value)``, ``None`` for ``None``; a bad value is one line naming ``what``."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{what} must be an integer, got {value!r}") from None


def wait_for_peers(addresses: list[str], timeout_s: float = PEER_WAIT_S) -> None:
    """Wait until every member's host name resolves (a pod's DNS record appears shortly after
    the pod exists; the headless Service publishes not-ready pods too). A peer still missing
    after ``timeout_s`` is one line and exit 1: the pod restarts, visibly, instead of
    waiting for a member that will never come."""
    pending = [a.rsplit(":", 1)[0].strip("[]") for a in addresses]
    deadline = time.monotonic() + timeout_s
    while pending:
        try:
            socket.getaddrinfo(pending[0], None, proto=socket.IPPROTO_TCP)
            pending.pop(0)
            continue
        except (OSError, UnicodeError):
            if time.monotonic() > deadline:
                raise JobpulseError(
                    f"cluster peer {pending[0]} does not resolve after {timeout_s:.0f}s: does "
                    "the StatefulSet run as many pods as BYTEWAX_REPLICAS says?"
                ) from None
        time.sleep(1.0)


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
        typer.Option(
            help="Cluster member: 'host:port;host:port...' (env BYTEWAX_ADDRESSES, or derived "
            "from BYTEWAX_REPLICAS and BYTEWAX_POD_NAME)."
        ),
    ] = None,
    verbose: VerboseOption = False,
    log_format: LogFormatOption = None,
) -> None:
    """Run the dataflow: offers topic → deltas topic, DLQ topic and live counts in Redis.

    Resumes from the recovery store after a stop or crash. Ctrl-C stops cleanly. Shows its
    progress on stderr and, with JOBPULSE_METRICS_PORT, serves Prometheus metrics
    (docs/operations.md).
    """
    from jobpulse import logs

    from . import progress
    from .runner import RunOptions
    from .runner import run as run_dataflow

    settings: Settings = ctx.obj.with_overrides(log_format=log_format)
    logs.setup(settings, verbose=verbose)
    env_process_id, env_addresses = _cluster_from_env()
    process_id = process_id if process_id is not None else env_process_id
    from_env = not addresses and env_addresses is not None
    addresses = addresses or env_addresses
    address_list = [a.strip() for a in addresses.split(";") if a.strip()] if addresses else None
    if address_list is not None and processes > 1:
        raise UsageError("--processes launches a local cluster; do not combine with --addresses")
    if from_env and address_list is not None:
        wait_for_peers(address_list)
    options = RunOptions(
        workers=workers,
        processes=processes,
        recovery_dir=recovery_dir,
        once=once,
        snapshot_interval_s=snapshot_interval,
        process_id=process_id if address_list else None,
        addresses=address_list,
        recount=recount,
    )
    progress.start(settings, speaks_for_run=options.speaks_for_run, once=once)
    try:
        run_dataflow(settings, options)
    finally:
        progress.stop_active(final=False)  # (the summary stopped it already after a run)
