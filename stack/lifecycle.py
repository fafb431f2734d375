"""``stack up | down | status``: the local Kafka and Redis as one unit.

``up`` reuses whatever already answers at the configured addresses and starts only what is
missing; ``down`` stops only the processes whose pid files this state dir holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from jobpulse.errors import JobpulseError, ServiceUnavailable
from jobpulse.settings import Settings
from jobpulse.stack import kafka, processes, redis_server, topics
from jobpulse.stack.processes import PidRecord, Tool

STARTED = "started"
RUNNING = "already running"
EXTERNAL = "external"
DOWN = "down"
STOPPED = "stopped"


@dataclass(frozen=True)
class ServiceState:
    """One service as ``up``/``down``/``status`` report it."""

    name: str
    address: str
    up: bool
    #: STARTED / RUNNING (ours) / EXTERNAL (not started from this state dir) / DOWN / STOPPED.
    state: str
    version: str | None = None
    pid: int | None = None
    seconds: float | None = None

    def line(self) -> str:
        """A one-line human summary."""
        parts = [f"{self.name:<6}", f"{self.state:<16}", f"{self.version or '-':<8}", self.address]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.seconds is not None:
            parts.append(f"ready in {self.seconds:.1f}s")
        return "  ".join(parts)


@dataclass(frozen=True)
class _Service:
    name: str
    address: Callable[[Settings], str]
    host: Callable[[Settings], str]
    probe: Callable[[Settings], str | None]  # version if it answers, else None
    pid_file: Callable[[Settings], Path]
    tools: Callable[[], list[Tool]]
    start: Callable[[Settings], PidRecord]
    exit_reason: Callable[[Settings, PidRecord], str | None]
    ready_timeout: float


def _kafka_probe(settings: Settings) -> str | None:
    if not processes.port_open(settings.kafka_host, settings.kafka_port):
        return None
    if not topics.kafka_ready(settings):
        return None
    return kafka.running_version(settings.kafka_port) or "unknown"


KAFKA = _Service(
    name="kafka",
    address=lambda s: s.kafka_bootstrap,
    host=lambda s: s.kafka_host,
    probe=_kafka_probe,
    pid_file=lambda s: kafka.Paths(s).pid,
    tools=kafka.required_tools,
    start=kafka.start,
    exit_reason=kafka.exit_reason,
    ready_timeout=kafka.READY_TIMEOUT_S,
)
REDIS = _Service(
    name="redis",
    address=lambda s: s.redis_url,
    host=lambda s: s.redis_host,
    probe=redis_server.version,
    pid_file=lambda s: redis_server.Paths(s).pid,
    tools=lambda: [redis_server.REDIS],
    start=redis_server.start,
    exit_reason=redis_server.exit_reason,
    ready_timeout=redis_server.READY_TIMEOUT_S,
)
SERVICES = (KAFKA, REDIS)


def _lock(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "run" / "stack.lock"


def status(settings: Settings) -> list[ServiceState]:
    """Each service: up or down, version, address, and our pid if we started it."""
    states = []
    for svc in SERVICES:
        record = processes.read_pid(svc.pid_file(settings))
        version = svc.probe(settings)
        pid = record.pid if record else None
        if version is not None:
            state = RUNNING if record else EXTERNAL
        else:
            state = "starting" if record else DOWN
        states.append(
            ServiceState(svc.name, svc.address(settings), version is not None, state, version, pid)
        )
    return states


def up(settings: Settings) -> tuple[list[ServiceState], float]:
    """Start what is not running, wait until Kafka serves metadata and Redis answers PING.

    Returns the states and the total seconds taken. Idempotent: services that already answer
    are reused, whether this state dir started them or not.
    """
    t0 = time.monotonic()
    with processes.locked(_lock(settings)):
        plan: dict[str, ServiceState | PidRecord | None] = {}
        for svc in SERVICES:
            record = processes.read_pid(svc.pid_file(settings))
            version = svc.probe(settings)
            if version is not None:
                state = RUNNING if record else EXTERNAL
                plan[svc.name] = ServiceState(
                    svc.name, svc.address(settings), True, state, version, record and record.pid
                )
            elif record is not None:
                plan[svc.name] = record  # ours, still starting: wait for it below
            elif not processes.is_local_host(svc.host(settings)):
                raise ServiceUnavailable(
                    f"{svc.name} at {svc.address(settings)} is not reachable, and jobpulse only "
                    "starts services on this machine (localhost)"
                )
            else:
                plan[svc.name] = None
        # Check every prerequisite before starting anything: one message, nothing half-up.
        needed = [tool for svc in SERVICES if plan[svc.name] is None for tool in svc.tools()]
        processes.require_tools(list(dict.fromkeys(needed)))
        started: dict[str, tuple[PidRecord, float]] = {}
        try:
            for svc in SERVICES:
                entry = plan[svc.name]
                if entry is None:
                    started[svc.name] = (svc.start(settings), time.monotonic())
                elif isinstance(entry, PidRecord):
                    started[svc.name] = (entry, time.monotonic())
            ready: dict[str, ServiceState] = {}
            # Redis is ready in a fraction of a second: wait for it first so that each
            # "ready in" is that service's own startup time.
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
                    processes.stop(started[svc.name][0])
                    svc.pid_file(settings).unlink(missing_ok=True)
            raise
    return states, time.monotonic() - t0


def down(settings: Settings, only: Iterable[str] | None = None) -> list[ServiceState]:
    """Stop the processes this state dir started (by pid); leave everything else alone.

    ``only`` limits it to the named services (``"kafka"``, ``"redis"``).
    """
    names = set(only) if only is not None else {svc.name for svc in SERVICES}
    states = []
    with processes.locked(_lock(settings)):
        for svc in SERVICES:
            if svc.name not in names:
                continue
            pid_file = svc.pid_file(settings)
            record = processes.read_pid(pid_file)
            if record is not None:
                processes.stop(record)
                pid_file.unlink(missing_ok=True)
                states.append(
                    ServiceState(svc.name, svc.address(settings), False, STOPPED, pid=record.pid)
                )
                continue
            version = svc.probe(settings)
            state = EXTERNAL if version is not None else DOWN
            states.append(
                ServiceState(svc.name, svc.address(settings), version is not None, state, version)
            )
    return states
