"""``jobpulse k8s``: what running the dataflow on Kubernetes needs beyond ``kubectl apply -k``.

- ``jobpulse k8s rescale N`` prints — or, with ``--apply``, runs — the one safe command
  sequence to change the dataflow cluster's size (or to restart it on a new image): stop
  every member, set the size once, start every member together. A Bytewax cluster cannot
  change size while it runs, and a StatefulSet rolled or scaled pod by pod would mix sizes
  or versions, so ``kubectl scale`` alone is never the way (docs/kubernetes.md).
- ``jobpulse k8s cluster-check`` is the dataflow pods' startup, readiness and liveness
  probe: exit 0 once this member holds a connection to every peer of its cluster (a single
  member always passes). Run as ``python -P -m jobpulse.cli.kubernetes cluster-check`` it
  skips the whole command's imports.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from jobpulse.errors import JobpulseError, UsageError

#: The dataflow's StatefulSet and its container, as named in k8s/base (a kustomize
#: ``namePrefix`` changes the first: pass ``--statefulset``).
STATEFULSET = "jobpulse-dataflow"
CONTAINER = "dataflow"
NAMESPACE = "jobpulse"

#: ``/proc/net/tcp`` state code of an established connection.
_ESTABLISHED = "01"

app = typer.Typer(
    help="Kubernetes helpers: rescale the dataflow safely, probe a cluster member.",
    no_args_is_help=True,
)


def register(main_app: typer.Typer) -> None:
    """Add ``jobpulse k8s …`` to the command."""
    main_app.add_typer(app, name="k8s")


# -- rescale ---------------------------------------------------------------------------------


def rescale_steps(
    replicas: int,
    *,
    namespace: str = NAMESPACE,
    statefulset: str = STATEFULSET,
    overlay: Path | None = None,
    context: str | None = None,
    timeout_s: int = 300,
) -> list[tuple[str, list[str]]]:
    """The commands that take the dataflow cluster to ``replicas`` members, each with why.

    Every member stops first (SIGTERM: it finishes its batches and snapshots), then the size
    is written once — ``BYTEWAX_REPLICAS`` in the pod template, or ``kubectl apply -k`` of an
    overlay that says ``replicas: N`` (the overlay copies it into ``BYTEWAX_REPLICAS``) —
    while no pod runs, then all members start together and resume from the shared recovery
    store. With the same ``replicas`` it is the restart that rolls out a new image or new
    settings (the StatefulSet's ``OnDelete`` strategy never does it pod by pod).
    """
    if replicas < 1:
        raise UsageError(
            "the dataflow needs at least 1 replica (to stop it: `kubectl scale "
            "statefulset/jobpulse-dataflow --replicas=0`)"
        )
    kubectl = ["kubectl", *(["--context", context] if context else []), "--namespace", namespace]
    target = f"statefulset/{statefulset}"
    steps = [
        (
            "stop every member: each finishes its batches and takes a last snapshot",
            [*kubectl, "scale", target, "--replicas=0"],
        ),
        (
            "wait until no member runs (a member of the old size must not meet the new ones)",
            [
                *kubectl, "wait", target, "--for=jsonpath={.status.replicas}=0",
                f"--timeout={timeout_s}s",
            ],
        ),
    ]  # fmt: skip
    if overlay is not None:
        steps.append(
            (
                f"apply the overlay, which must say `replicas: {replicas}`: it sets the "
                "StatefulSet's replicas and BYTEWAX_REPLICAS together, and starts the members",
                [*kubectl, "apply", "-k", str(overlay)],
            )
        )
        return steps
    steps += [
        (
            "write the size once into the pod template (no pod runs, so nothing restarts)",
            [
                *kubectl, "set", "env", target, f"--containers={CONTAINER}",
                f"BYTEWAX_REPLICAS={replicas}",
            ],
        ),
        (
            "start every member together; they resume from the shared recovery store",
            [*kubectl, "scale", target, f"--replicas={replicas}"],
        ),
    ]  # fmt: skip
    return steps


@app.command("rescale")
def rescale(
    replicas: Annotated[int, typer.Argument(help="The new number of dataflow pods.", min=1)],
    namespace: Annotated[str, typer.Option(help="The namespace.")] = NAMESPACE,
    statefulset: Annotated[str, typer.Option(help="The dataflow StatefulSet.")] = STATEFULSET,
    overlay: Annotated[
        Path | None,
        typer.Option(
            help="A kustomize overlay that says `replicas: N`: applied instead of "
            "`kubectl set env` + `kubectl scale`, so it stays the one place the size is kept.",
            show_default=False,
        ),
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="kubectl context.", show_default=False)
    ] = None,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for the stop.", min=1)] = 300,
    apply: Annotated[
        bool, typer.Option("--apply", help="Run the commands with kubectl (default: print).")
    ] = False,
) -> None:
    """The safe way to resize (or restart) the dataflow cluster: stop all, resize, start all.

    Prints the kubectl commands; --apply runs them one after the other and stops at the
    first that fails. More members than offers partitions read nothing (grow the topic first
    with `jobpulse topics grow`).
    """
    steps = rescale_steps(
        replicas,
        namespace=namespace,
        statefulset=statefulset,
        overlay=overlay,
        context=context,
        timeout_s=timeout,
    )
    if not apply:
        for n, (why, command) in enumerate(steps, 1):
            typer.echo(f"# {n}. {why}\n{shlex.join(command)}")
        if overlay is None:
            typer.echo(
                f"# then write `replicas: {replicas}` in your overlay's kustomization.yaml: "
                "the next `kubectl apply -k` would set the old size back"
            )
        return
    if shutil.which("kubectl") is None:
        raise JobpulseError("kubectl not found on PATH: run without --apply to print the steps")
    for n, (why, command) in enumerate(steps, 1):
        typer.echo(f"# {n}. {why}\n{shlex.join(command)}", err=True)
        if subprocess.run(command, check=False, stdin=subprocess.DEVNULL).returncode != 0:
            raise JobpulseError(f"step {n} failed ({shlex.join(command)}): nothing after it ran")


# -- the dataflow pods' probe ----------------------------------------------------------------


Endpoint = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def established_peers(
    own: Endpoint, peers: list[Endpoint], tables: list[Path] | None = None
) -> int:
    """How many peers this member holds an established TCP connection with. Bytewax's members
    connect to the lower-numbered ones and accept the higher-numbered ones, one connection
    per pair: count the connections accepted at this member's own address, plus the peers
    connected to (each once). Read from ``/proc/net/tcp`` and ``tcp6`` (no ``ss`` or
    ``netstat`` in the image). Exact in a pod's own network namespace; processes sharing one
    (a local test) also see each other's outgoing connections."""
    accepted = 0
    reached: set[Endpoint] = set()
    for table in tables or [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _ESTABLISHED:
                continue
            local, remote = _endpoint(fields[1]), _endpoint(fields[2])
            if local == own:
                accepted += 1
            elif remote in peers:
                reached.add(remote)
    return accepted + len(reached)


def _endpoint(hex_address: str) -> Endpoint:
    """``0100007F:0835`` (little-endian words, as the kernel prints them) → (127.0.0.1, 2101);
    an IPv4-mapped IPv6 address comes back as IPv4."""
    address, port = hex_address.split(":")
    raw = bytes.fromhex(address)
    # The kernel prints each 32-bit word in host (little-endian) byte order.
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, int(port, 16)
    return ip, int(port, 16)


def cluster_check(environ: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether this cluster member is connected to every peer, and a line saying so."""
    from jobpulse.dataflows.cli import _cluster_from_env

    process_id, addresses = _cluster_from_env(environ)
    members = [a.strip() for a in (addresses or "").split(";") if a.strip()]
    if process_id is None or len(members) <= 1:
        return True, "a single member: no peers to connect to"
    try:
        endpoints = [_resolved(member) for member in members]
    except (OSError, UnicodeError, ValueError) as exc:
        return False, f"a member's address does not resolve ({exc})"
    own = endpoints[process_id]
    connected = established_peers(own, [e for e in endpoints if e != own])
    peers = len(members) - 1
    ok = connected >= peers
    return ok, f"member {process_id}: connected to {min(connected, peers)} of {peers} peers"


def _resolved(address: str) -> Endpoint:
    """``host:port`` → (IP address, port), the way the cluster connects to it."""
    host, _, port = address.rpartition(":")
    info = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)[0]
    ip = ipaddress.ip_address(str(info[4][0]))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(port)


@app.command("cluster-check")
def cluster_check_command() -> None:
    """Probe of a dataflow pod: exit 0 once it is connected to every peer, else 1."""
    ok, line = cluster_check()
    typer.echo(line)
    if not ok:
        raise typer.Exit(1)


def container_health(environ: dict[str, str]) -> tuple[bool, str]:
    """The image's ``HEALTHCHECK``, whatever command the container runs: the dashboard
    answers ``/healthz``; a dataflow cluster member is connected to its peers; any other
    command is healthy while it runs (its own retries and exit codes say the rest)."""
    try:
        command = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        command = []
    if b"dashboard" in command:
        import urllib.request

        port = environ.get("JOBPULSE_DASHBOARD_PORT") or "5006"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                return answer.status == 200, f"dashboard /healthz: HTTP {answer.status}"
        except OSError as exc:
            return False, f"dashboard /healthz: {exc}"
    if b"run" in command:
        return cluster_check(environ)
    return True, "running"


def _main(argv: list[str]) -> int:
    """``python -P -m jobpulse.cli.kubernetes cluster-check|healthcheck``: the probes
    without the whole command's imports (they run every few seconds in every pod)."""
    checks = {"cluster-check": cluster_check, "healthcheck": container_health}
    if len(argv) != 1 or argv[0] not in checks:
        print(f"usage: python -m jobpulse.cli.kubernetes {'|'.join(checks)}", file=sys.stderr)
        return 2
    try:
        ok, line = checks[argv[0]](dict(os.environ))
    except JobpulseError as exc:
        ok, line = False, str(exc)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
