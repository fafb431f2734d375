"""Redis from Debian's ``redis-server``, with its files under the state dir."""

from __future__ import annotations

from pathlib import Path

import redis

from jobpulse import processes
from jobpulse.errors import JobpulseError
from jobpulse.processes import PidRecord, Tool
from jobpulse.settings import Settings
from jobpulse.store import is_auth_error, redis_client, redis_unavailable

REDIS = Tool("redis-server", "run `make deps` or apt-get install redis-server")
READY_TIMEOUT_S = 30.0


class Paths:
    """Where Redis keeps its files under the state dir."""

    def __init__(self, settings: Settings) -> None:
        state = settings.state_dir.resolve()
        self.data = state / "redis"
        self.log = state / "logs" / "redis.log"
        self.pid = state / "run" / "redis.pid"


def client(settings: Settings, timeout: float = 2.0) -> redis.Redis:
    """A client for ``settings.redis_url`` with short timeouts (for probes)."""
    return redis_client(settings, socket_timeout=timeout, connect_timeout=timeout)


def version(settings: Settings) -> str | None:
    """Server version if Redis answers PING at the configured URL, else ``None``.

    A Redis that answers but refuses the URL's credentials is not "down": that raises
    :class:`~jobpulse.errors.AuthenticationFailed` (waiting or starting another will not help).
    """
    try:
        conn = client(settings)
        try:
            if not conn.ping():
                return None
            return str(conn.info("server").get("redis_version", "unknown"))
        finally:
            conn.close()
    except (redis.RedisError, OSError) as exc:
        if is_auth_error(exc):
            raise redis_unavailable(settings, exc) from None
        return None


def bind_host(settings: Settings) -> str:
    """Interfaces to listen on: loopback (IPv6 optional) for ``localhost``, else the host."""
    host = settings.redis_host
    return "127.0.0.1 -::1" if host in {"localhost", "127.0.0.1", ""} else host


def command(settings: Settings, server: str, paths: Paths) -> list[str]:
    """The ``redis-server`` command line (no config file: everything is an argument)."""
    return [
        server,
        "--port",
        str(settings.redis_port),
        "--bind",
        bind_host(settings),
        "--dir",
        str(paths.data),
        "--daemonize",
        "no",
        # Log to stdout, which start_detached sends to the log file.
        "--logfile",
        "",
        # Durable across restarts: the counts are the dashboard's source of truth.
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
    ]


def start(settings: Settings) -> PidRecord:
    """Launch ``redis-server`` in the background; its pid goes into the state dir."""
    if settings.redis_url.startswith("unix://"):
        raise JobpulseError(
            f"Redis at {settings.redis_display} is not running, and jobpulse only starts Redis "
            "on a TCP port: point JOBPULSE_REDIS_URL at redis://localhost:<port>/0"
        )
    server = processes.require_tools([REDIS])["redis-server"]
    paths = Paths(settings)
    paths.data.mkdir(parents=True, exist_ok=True)
    if processes.port_open(settings.redis_host, settings.redis_port):
        raise JobpulseError(
            f"port {settings.redis_port} is taken by a process that does not answer Redis PING: "
            "stop it, or point JOBPULSE_REDIS_URL at a free port"
        )
    return processes.start_detached(command(settings, server, paths), paths.log, paths.pid)


def exit_reason(settings: Settings, record: PidRecord) -> str | None:
    """Why a Redis we just started is gone (``None`` while it runs)."""
    code = processes.exited_early(record)
    if code is None:
        return None
    log: Path = Paths(settings).log
    return f"redis-server exited (code {code}); see {log}:\n" + processes.tail(log, 10)
