"""``stack up | down | status``: the local Kafka, Redis and PostgreSQL as one unit.

``up`` reuses whatever already answers at the configured addresses and starts only what is
missing; ``down`` stops only the processes whose pid files this state dir holds. A pid is
attributed to a configured service only if this state dir started that process *and* it
listens at the configured address; anything else answering there is ``external``. Addresses
are shown with their credentials masked, and a service that refuses the configured
credentials is reported as such at once (never as "down", never waited for).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from jobpulse import pg, processes, topics
from jobpulse.errors import AuthenticationFailed, JobpulseError, ServiceUnavailable
from jobpulse.processes import PidRecord, Tool
from jobpulse.settings import Settings
from jobpulse.stack import kafka, postgres, redis_server

STARTED = "started"
RUNNING = "already running"
EXTERNAL = "external"
DOWN = "down"
STOPPED = "stopped"
STARTING = "starting"
AUTH_FAILED = "auth failed"


@dataclass(frozen=True)
class ServiceState:
    """One service as ``up``/``down``/``status`` report it."""

    name: str
    address: str
    up: bool
    #: STARTED / RUNNING / STARTING (ours) / EXTERNAL (not started from this state dir) /
    #: AUTH_FAILED / DOWN / STOPPED.
    state: str
    version: str | None = None
    pid: int | None = None
    seconds: float | None = None
    #: What the user must fix (e.g. the credentials Redis refused), one line.
    problem: str | None = None

    def line(self) -> str:
        """A one-line human summary."""
        parts = [f"{self.name:<8}", f"{self.state:<16}", f"{self.version or '-':<8}", self.address]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.seconds is not None:
            parts.append(f"ready in {self.seconds:.1f}s")
        return "  ".join(parts)


@dataclass(frozen=True)
class _Service:
    name: str
    #: The configured address as it may be shown (credentials masked).
    address: Callable[[Settings], str]
    host: Callable[[Settings], str]
    #: ``(host, port)`` a process of ours must listen at to serve the configured address
    #: (``None``: jobpulse never starts one for it, e.g. a ``unix://`` Redis URL).
    endpoint: Callable[[Settings], tuple[str, int] | None]
    probe: Callable[[Settings], str | None]  # version if it answers, else None
    pid_file: Callable[[Settings], Path]
    #: What keeps ``up`` from starting it (missing tools...), one line each.
    problems: Callable[[Settings], list[str]]
    start: Callable[[Settings], PidRecord]
    exit_reason: Callable[[Settings, PidRecord], str | None]
    ready_timeout: float
    #: Stops a process of ours and waits until it is gone.
    stop: Callable[[Settings, PidRecord], None] = lambda _settings, record: processes.stop(record)
    #: Makes the configured address usable on a running process of ours (PostgreSQL: the
    #: URL's role and database); ``up`` runs it before reusing one.
    prepare: Callable[[Settings], None] | None = None


def _missing(tools: Iterable[Tool]) -> list[str]:
    """``<tool> not found: <fix>`` for each tool not on PATH."""
    return [f"{tool.name} not found: {tool.fix}" for tool in tools if not shutil.which(tool.name)]


def _kafka_probe(settings: Settings) -> str | None:
    if not processes.port_open(settings.kafka_host, settings.kafka_port):
        return None
    if not topics.kafka_ready(settings):
        return None
    return kafka.running_version(settings.kafka_port) or "unknown"


KAFKA = _Service(
    name="kafka",
    address=lambda s: s.kafka_display,
    host=lambda s: s.kafka_host,
    endpoint=lambda s: (s.kafka_host, s.kafka_port),
    probe=_kafka_probe,
    pid_file=lambda s: kafka.Paths(s).pid,
    problems=lambda _s: _missing(kafka.required_tools()),
    start=kafka.start,
    exit_reason=kafka.exit_reason,
    ready_timeout=kafka.READY_TIMEOUT_S,
)
REDIS = _Service(
    name="redis",
    address=lambda s: s.redis_display,
    host=lambda s: s.redis_host,
    endpoint=lambda s: None if s.redis_url.startswith("unix:") else (s.redis_host, s.redis_port),
    probe=redis_server.version,
    pid_file=lambda s: redis_server.Paths(s).pid,
    problems=lambda _s: _missing([redis_server.REDIS]),
    start=redis_server.start,
    exit_reason=redis_server.exit_reason,
    ready_timeout=redis_server.READY_TIMEOUT_S,
)


def _postgres_endpoint(settings: Settings) -> tuple[str, int] | None:
    where = pg.target(settings)
    return (str(where.host), where.port) if where.tcp else None


POSTGRES = _Service(
    name="postgres",
    address=pg.display,
    host=lambda s: pg.target(s).host or "localhost",
    endpoint=_postgres_endpoint,
    probe=pg.server_version,
    pid_file=lambda s: postgres.Paths(s).pid,
    problems=postgres.problems,
    start=postgres.start,
    exit_reason=postgres.exit_reason,
    ready_timeout=postgres.READY_TIMEOUT_S,
    stop=postgres.stop,
    prepare=postgres.prepare,
)
SERVICES = (KAFKA, REDIS, POSTGRES)


def _lock(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "run" / "stack.lock"


def _records(svc: _Service, settings: Settings) -> tuple[PidRecord | None, PidRecord | None]:
    """``(ours, elsewhere)``: this state dir's process for ``svc`` as ``ours`` if it listens
    at the configured address (or on no port yet: still starting), else as ``elsewhere``."""
    record = processes.read_pid(svc.pid_file(settings))
    if record is None:
        return None, None
    endpoint = svc.endpoint(settings)
    if endpoint is not None and processes.serves_at(record, *endpoint) is not False:
        return record, None
    return None, record


def _probe(svc: _Service, settings: Settings) -> tuple[str | None, AuthenticationFailed | None]:
    """``(version, None)`` if ``svc`` answers at the configured address, ``(None, error)``
    if it refuses the configured credentials, ``(None, None)`` if it does not answer."""
    try:
        return svc.probe(settings), None
    except AuthenticationFailed as exc:
        return None, exc


def status(settings: Settings) -> list[ServiceState]:
    """Each service: up or down, version, address, and our pid if this state dir started
    the process that serves the configured address."""
    states = []
    for svc in SERVICES:
        ours, _ = _records(svc, settings)
        version, refused = _probe(svc, settings)
        if version is not None:
            state = RUNNING if ours else EXTERNAL
        elif refused is not None:
            state = AUTH_FAILED
        else:
            state = STARTING if ours else DOWN
        states.append(
            ServiceState(
                svc.name,
                svc.address(settings),
                version is not None,
                state,
                version,
                ours.pid if ours else None,
                problem=str(refused) if refused else None,
            )
        )
    return states


def up(settings: Settings) -> tuple[list[ServiceState], float]:
    """Start what is not running, wait until Kafka serves metadata, Redis answers PING and
    PostgreSQL lets the configured user into the configured database.

    Returns the states and the total seconds taken. Idempotent: services that already answer
    are reused, whether this state dir started them or not (a PostgreSQL of ours gets the
    URL's role and database first). A service that refuses the configured credentials is
    :class:`AuthenticationFailed` at once.
    """
    t0 = time.monotonic()
    with processes.locked(_lock(settings)):
        plan: dict[str, ServiceState | PidRecord | None] = {}
        for svc in SERVICES:
            ours, elsewhere = _records(svc, settings)
            if ours is not None and svc.prepare is not None:
                _prepare_ours(svc, settings)
            version = svc.probe(settings)  # AuthenticationFailed: nothing to start or wait for
            if version is not None:
                state = RUNNING if ours else EXTERNAL
                plan[svc.name] = ServiceState(
                    svc.name,
                    svc.address(settings),
                    True,
                    state,
                    version,
                    ours.pid if ours else None,
                )
            elif ours is not None:
                plan[svc.name] = ours  # still starting: wait for it below
            elif not processes.is_local_host(svc.host(settings)):
                raise ServiceUnavailable(
                    f"{svc.name} at {svc.address(settings)} is not reachable, and jobpulse only "
                    "starts services on this machine (localhost)"
                )
            elif elsewhere is not None:
                raise JobpulseError(
                    f"{svc.name} at {svc.address(settings)} is not running, and the {svc.name} "
                    f"this state dir ({settings.state_dir}) started, pid {elsewhere.pid}, "
                    f"listens at {_listening(elsewhere)}: stop it with `jobpulse stack down`, "
                    "or use another JOBPULSE_STATE_DIR for this address"
                )
            else:
                plan[svc.name] = None
        # Check every prerequisite before starting anything: one message, nothing half-up.
        missing = [p for svc in SERVICES if plan[svc.name] is None for p in svc.problems(settings)]
        if missing:
            raise JobpulseError("; ".join(dict.fromkeys(missing)))
        started: dict[str, tuple[PidRecord, float]] = {}
        try:
            for svc in SERVICES:
                entry = plan[svc.name]
                if entry is None:
                    began = time.monotonic()
                    started[svc.name] = (svc.start(settings), began)
                elif isinstance(entry, PidRecord):
                    started[svc.name] = (entry, time.monotonic())
            ready: dict[str, ServiceState] = {}
            # Quickest first (Redis, then PostgreSQL, then Kafka) so that each "ready in" is
            # that service's own startup time.
            for svc in sorted(SERVICES, key=lambda s: s.ready_timeout):
                entry = plan[svc.name]
                if isinstance(entry, ServiceState):
                    ready[svc.name] = entry
                    continue
                record, began = started[svc.name]
                processes.wait_until(
                    lambda svc=svc: svc.probe(settings) is not None,
                    timeout=svc.ready_timeout,
                    what=f"{svc.name} at {svc.address(settings)}",
                    failed=lambda svc=svc, record=record: svc.exit_reason(settings, record),
                )
                ready[svc.name] = ServiceState(
                    svc.name,
                    svc.address(settings),
                    True,
                    STARTED if entry is None else RUNNING,
                    svc.probe(settings),
                    record.pid,
                    time.monotonic() - began,
                )
            states = [ready[svc.name] for svc in SERVICES]
        except (JobpulseError, KeyboardInterrupt):
            # Leave nothing half-started behind.
            for svc in SERVICES:
                if plan[svc.name] is None and svc.name in started:
                    svc.stop(settings, started[svc.name][0])
                    svc.pid_file(settings).unlink(missing_ok=True)
            raise
    return states, time.monotonic() - t0


def down(settings: Settings, only: Iterable[str] | None = None) -> list[ServiceState]:
    """Stop the processes this state dir started (by pid); leave everything else alone.

    ``only`` limits it to the named services (``"kafka"``, ``"redis"``, ``"postgres"``).
    """
    names = set(only) if only is not None else {svc.name for svc in SERVICES}
    states = []
    with processes.locked(_lock(settings)):
        for svc in SERVICES:
            if svc.name not in names:
                continue
            pid_file = svc.pid_file(settings)
            ours, elsewhere = _records(svc, settings)
            record = ours or elsewhere
            if record is not None:
                # Shown where it listened: that may not be the configured address.
                address = svc.address(settings) if ours else _listening(record)
                svc.stop(settings, record)
                pid_file.unlink(missing_ok=True)
                states.append(ServiceState(svc.name, address, False, STOPPED, pid=record.pid))
                continue
            version, refused = _probe(svc, settings)
            answers = version is not None or refused is not None
            state = EXTERNAL if answers else DOWN
            states.append(ServiceState(svc.name, svc.address(settings), answers, state, version))
    return states


def _prepare_ours(svc: _Service, settings: Settings) -> None:
    """Run ``svc.prepare`` on a process of ours that accepts connections (one still
    starting up is left to the wait in :func:`up`)."""
    assert svc.prepare is not None
    try:
        svc.prepare(settings)
    except AuthenticationFailed:
        raise
    except ServiceUnavailable:
        pass


def _listening(record: PidRecord) -> str:
    """Where a process listens, for messages (``127.0.0.1:6379``; ``?`` if unknown)."""
    addresses = processes.listen_addresses(record) or []
    shown = [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip, port in addresses]
    return ", ".join(sorted(set(shown))) or "?"
