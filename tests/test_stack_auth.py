"""A Redis that needs a password, a service configured elsewhere than the local stack, and
a hung Redis: real ``redis-server`` processes and the real CLI, no mocks.

- Authentication: a wrong or missing password is one line saying so (user, host:port,
  the URL masked), a non-zero exit at once — never "not reachable, start it with
  `jobpulse stack up`", never a 30 s wait.
- Attribution: ``stack status`` shows a pid only for a process this state dir started that
  listens at the configured address; anything else is ``external`` (or ``down``), no pid.
- Timeouts: the store's client sets its own connect/reply timeouts and health check; a
  Redis that accepts connections but never answers fails a command or a read within
  seconds; pub/sub still blocks past the socket timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from conftest import PrivateRedis, free_port

from jobpulse.settings import Settings
from jobpulse.store import (
    CONNECT_TIMEOUT_S,
    HEALTH_CHECK_INTERVAL_S,
    SOCKET_TIMEOUT_S,
    Store,
)

if TYPE_CHECKING:
    from conftest import CliRunner

pytestmark = pytest.mark.integration

#: The password the private Redis requires.
RIGHT_PASSWORD = "right-pw-4711"
#: A wrong password planted in the URL: it must never be printed.
PLANTED = "s3cr3t-planted-XYZ"
#: Well under ``stack up``'s 30 s wait for Redis: "at once".
AT_ONCE_S = 15.0


@dataclass(frozen=True)
class PasswordRedis:
    """A private ``redis-server`` started with ``--requirepass``."""

    port: int
    process: subprocess.Popen[bytes]

    def url(self, password: str | None, user: str = "default") -> str:
        """``redis://user:password@localhost:port/0`` (no user info without a password)."""
        auth = f"{user}:{password}@" if password is not None else ""
        return f"redis://{auth}localhost:{self.port}/0"

    def masked(self, user: str = "default") -> str:
        """The URL with a password as jobpulse must show it."""
        return f"redis://{user}:***@localhost:{self.port}/0"


@contextlib.contextmanager
def password_redis(workdir: Path) -> Iterator[PasswordRedis]:
    """Run a throw-away Redis that requires :data:`RIGHT_PASSWORD` (no persistence); stopped
    on exit."""
    server = PrivateRedis(workdir, password=RIGHT_PASSWORD)
    server.start()
    try:
        assert server.process is not None
        yield PasswordRedis(server.port, server.process)
    finally:
        server.stop()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[PasswordRedis]:
    """A private Redis requiring a password, for one test."""
    with password_redis(tmp_path / "password-redis") as server:
        yield server


def timed(
    cli: CliRunner, settings: Settings, *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI (killed after :data:`AT_ONCE_S` × 4) and measure how long it took."""
    started = time.monotonic()
    result = cli(settings, *args, timeout=AT_ONCE_S * 4)
    return result, time.monotonic() - started


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The ``jobpulse: ...`` lines on stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("jobpulse:")]


def service_line(output: str, name: str) -> str:
    """The ``kafka``/``redis`` line of a stack command's output."""
    lines = [line for line in output.splitlines() if line.split()[:1] == [name]]
    assert len(lines) == 1, output
    return lines[0]


# -- authentication ------------------------------------------------------------------------
AUTH_COMMANDS = [
    ("stack", "status"),
    ("stack", "up"),
    ("breakdown",),
    ("verify",),
    ("run", "--once"),
]


@pytest.mark.parametrize("command", AUTH_COMMANDS, ids=" ".join)
def test_wrong_password_is_one_authentication_line_at_once(
    settings: Settings, secured: PasswordRedis, cli: CliRunner, command: tuple[str, ...]
) -> None:
    wrong = settings.with_overrides(redis_url=secured.url(PLANTED))
    result, seconds = timed(cli, wrong, *command)
    assert result.returncode != 0
    assert seconds < AT_ONCE_S, f"{' '.join(command)} took {seconds:.1f}s"
    assert "Traceback" not in result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert f"Redis authentication failed for user 'default' at localhost:{secured.port}" in lines[0]
    assert secured.masked() in lines[0]
    output = result.stdout + result.stderr
    assert "not reachable" not in output and "stack up`" not in output
    assert PLANTED not in output


@pytest.mark.parametrize("command", [("stack", "status"), ("breakdown",)], ids=" ".join)
def test_missing_password_says_the_server_requires_one(
    settings: Settings, secured: PasswordRedis, cli: CliRunner, command: tuple[str, ...]
) -> None:
    anonymous = settings.with_overrides(redis_url=secured.url(None))
    result, seconds = timed(cli, anonymous, *command)
    assert result.returncode != 0 and seconds < AT_ONCE_S
    (line,) = error_lines(result)
    assert f"authentication failed for user 'default' at localhost:{secured.port}" in line
    assert "requires a password" in line and "not reachable" not in line


def test_right_password_is_an_external_redis_that_works(
    settings: Settings, secured: PasswordRedis, cli: CliRunner
) -> None:
    right = settings.with_overrides(redis_url=secured.url(RIGHT_PASSWORD))
    breakdown = cli(right, "breakdown", "--json")
    assert breakdown.returncode == 0, breakdown.stderr
    status = cli(right, "stack", "status")
    assert status.returncode == 0, status.stderr
    line = service_line(status.stdout, "redis")
    assert " external " in line and "pid" not in line
    assert secured.masked() in line
    assert RIGHT_PASSWORD not in status.stdout + status.stderr


# -- which pid belongs to the configured service --------------------------------------------
def test_status_shows_no_local_pid_for_services_configured_elsewhere(
    stack: Settings, cli: CliRunner
) -> None:
    """The shared stack's state dir, but both addresses point where nothing listens."""
    elsewhere = stack.with_overrides(
        kafka_bootstrap=f"localhost:{free_port()}", redis_url=f"redis://localhost:{free_port()}/0"
    )
    result = cli(elsewhere, "stack", "status")
    assert result.returncode == 3
    for name in ("kafka", "redis"):
        line = service_line(result.stdout, name)
        assert " down " in line and "pid" not in line, line


def test_a_pid_is_shown_only_where_this_state_dir_serves(
    settings: Settings, secured: PasswordRedis, tmp_path: Path, cli: CliRunner
) -> None:
    """This state dir starts its own Redis; pointed elsewhere, it owns nothing there."""
    own = settings.with_overrides(
        redis_url=f"redis://localhost:{free_port()}/0", state_dir=tmp_path / "own-state"
    )
    try:
        up = cli(own, "stack", "up")
        assert up.returncode == 0, up.stderr
        assert " started " in service_line(up.stdout, "redis")
        status = cli(own, "stack", "status")
        own_line = service_line(status.stdout, "redis")
        assert " already running " in own_line and " pid " in own_line
        own_pid = own_line.split(" pid ")[1].split()[0]

        # Nothing listens at the configured address: down, and not our pid.
        dead = own.with_overrides(redis_url=f"redis://default:{PLANTED}@localhost:{free_port()}/0")
        result = cli(dead, "stack", "status")
        assert result.returncode == 3
        line = service_line(result.stdout, "redis")
        assert " down " in line and "pid" not in line, line
        # `up` does not wait 30 s for "our" Redis: it says where that one listens.
        result, seconds = timed(cli, dead, "stack", "up")
        assert result.returncode == 1 and seconds < AT_ONCE_S
        (error,) = error_lines(result)
        assert f"pid {own_pid}" in error and "stack down" in error
        assert PLANTED not in result.stdout + result.stderr

        # Another Redis answers there: external, no pid.
        other = own.with_overrides(redis_url=secured.url(RIGHT_PASSWORD))
        result = cli(other, "stack", "status")
        assert result.returncode == 0, result.stderr
        line = service_line(result.stdout, "redis")
        assert " external " in line and "pid" not in line, line
        # ... refusing our password: one line at once, no 30 s wait for "our" Redis.
        wrong = own.with_overrides(redis_url=secured.url(PLANTED))
        result, seconds = timed(cli, wrong, "stack", "up")
        assert result.returncode == 1 and seconds < AT_ONCE_S
        (error,) = error_lines(result)
        assert "Redis authentication failed for user 'default'" in error
    finally:
        down = cli(own, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert " stopped " in service_line(down.stdout, "redis")


# -- timeouts ------------------------------------------------------------------------------
def test_the_store_client_never_waits_forever(settings: Settings) -> None:
    """Explicit connect and reply timeouts, keepalive and a health check of idle pooled
    connections (redis-py's own defaults differ between versions)."""
    store = Store.connect(settings)
    try:
        options = store.client.connection_pool.connection_kwargs
        assert options["socket_connect_timeout"] == CONNECT_TIMEOUT_S
        assert options["socket_timeout"] == SOCKET_TIMEOUT_S
        assert options["socket_keepalive"] is True
        assert options["health_check_interval"] == HEALTH_CHECK_INTERVAL_S > 0
    finally:
        store.client.close()


def test_a_hung_redis_fails_the_command_instead_of_hanging_it(
    settings: Settings, secured: PasswordRedis, cli: CliRunner
) -> None:
    """SIGSTOP: the kernel still accepts connections, but nothing ever answers."""
    right = settings.with_overrides(redis_url=secured.url(RIGHT_PASSWORD))
    os.kill(secured.process.pid, signal.SIGSTOP)
    try:
        result, seconds = timed(cli, right, "breakdown")
    finally:
        os.kill(secured.process.pid, signal.SIGCONT)
    assert result.returncode == 1 and seconds < AT_ONCE_S * 2
    (line,) = error_lines(result)
    assert "Redis is not reachable" in line and "Timeout" in line
    assert RIGHT_PASSWORD not in result.stdout + result.stderr


def test_a_redis_that_hangs_mid_session_fails_the_call(
    settings: Settings, secured: PasswordRedis
) -> None:
    """A connected store whose Redis stops answering: the next read raises within about
    the socket timeout instead of blocking its caller forever."""
    store = Store.connect(settings.with_overrides(redis_url=secured.url(RIGHT_PASSWORD)))
    store.breakdown()  # connected and working
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            store.breakdown()
            outcome.append(None)
        except redis.RedisError as exc:
            outcome.append(exc)

    os.kill(secured.process.pid, signal.SIGSTOP)
    try:
        reader = threading.Thread(target=read, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(SOCKET_TIMEOUT_S * 4)
        assert not reader.is_alive(), "the read is still blocked on a hung Redis"
    finally:
        os.kill(secured.process.pid, signal.SIGCONT)
    assert isinstance(outcome[0], redis.TimeoutError)
    assert time.monotonic() - started < SOCKET_TIMEOUT_S * 2
    store.client.close()


def test_pubsub_blocks_longer_than_the_socket_timeout(settings: Settings) -> None:
    """The store's client has a reply timeout, yet a blocking subscriber keeps listening."""
    store = Store.connect(settings)
    pubsub = store.pubsub()
    publisher = Store.connect(settings)
    try:
        assert pubsub.get_message(timeout=1.0) is None  # the subscription is settled
        timer = threading.Timer(
            SOCKET_TIMEOUT_S + 1.0, publisher.client.publish, (store.keys.updates, b"late")
        )
        timer.start()
        started = time.monotonic()
        message = next(pubsub.listen())
        assert message["data"] == b"late"
        assert time.monotonic() - started > SOCKET_TIMEOUT_S
        timer.join()
    finally:
        pubsub.close()
        store.client.close()
        publisher.client.close()
