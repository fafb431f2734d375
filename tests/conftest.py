"""Shared fixtures: the real local stack, isolated per-test settings, Redis, and the CLI.

Everything runs against the real Kafka, Redis and PostgreSQL (no mocks):

- ``stack`` (session): makes sure Kafka, Redis and PostgreSQL answer at the configured
  addresses (JOBPULSE_KAFKA_BOOTSTRAP / JOBPULSE_REDIS_URL / JOBPULSE_POSTGRES_URL, default
  localhost:9092 / 6379 / 5432, PostgreSQL with the URL's user and database), reusing a
  running stack or starting one with ``jobpulse stack up`` semantics; whatever it started it
  stops at the end of the session. Returns the base :class:`Settings`.
- ``sink_settings`` (function): ``settings`` plus a rows topic and a PostgreSQL schema of
  its own (the PostgreSQL sink's tests).
- ``settings`` (function): base settings with unique topics (``t-<id>.offers`` …), a unique
  ``redis_prefix`` and a temporary ``state_dir``; the three topics exist. Cleaned up afterwards.
- ``redis_client`` (function): ``redis.Redis`` for ``settings.redis_url`` (bytes responses).
- ``cli`` (function): ``cli(settings, *args, env=None, timeout=120)`` runs
  ``python -m jobpulse *args`` with ``settings`` as JOBPULSE_* variables and returns the
  ``CompletedProcess`` (text).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest
import redis

from jobpulse import kafka, pg, processes, topics
from jobpulse import settings as settings_module
from jobpulse.errors import JobpulseError
from jobpulse.offer_row import sink_group
from jobpulse.settings import Settings, child_env
from jobpulse.stack import lifecycle
from jobpulse.store import Store

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEST_PARTITIONS = 12

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "partitions(n): partition count of the topics the `settings` fixture creates "
        f"(default {DEFAULT_TEST_PARTITIONS})",
    )


def base_settings() -> Settings:
    """Settings from the environment, with a relative state dir anchored at the repo root."""
    base = settings_module.load()
    if not base.state_dir.is_absolute():
        base = base.with_overrides(state_dir=REPO / base.state_dir)
    return base


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """Kafka, Redis and PostgreSQL up at the configured addresses for the whole session (see
    module doc): ``settings.postgres_url`` connects."""
    base = base_settings()
    try:
        states, seconds = lifecycle.up(base)
        error = None
    except JobpulseError as exc:
        error = str(exc)
    if error is not None:
        # Outside the except block, so the report is this one line, not a chained traceback.
        pytest.fail(
            f"the local stack (Kafka + Redis + PostgreSQL) could not start: {error}",
            pytrace=False,
        )
    started = [s.name for s in states if s.state == lifecycle.STARTED]
    if started:
        print(f"\n[jobpulse] started {', '.join(started)} in {seconds:.1f}s", file=sys.stderr)
    yield base
    if started:
        lifecycle.down(base, only=started)


@pytest.fixture
def settings(stack: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Isolated settings: unique topics (created), Redis prefix and state dir.

    Partitions default to 12; choose another count with ``@pytest.mark.partitions(n)`` or
    ``@pytest.mark.parametrize("settings", [n], indirect=True)``. Topics and Redis keys
    are deleted afterwards (best effort).
    """
    marker = request.node.get_closest_marker("partitions")
    partitions = int(
        marker.args[0] if marker else getattr(request, "param", DEFAULT_TEST_PARTITIONS)
    )
    tag = f"t-{uuid.uuid4().hex[:8]}"
    test_settings = stack.with_overrides(
        offers_topic=f"{tag}.offers",
        deltas_topic=f"{tag}.deltas",
        dlq_topic=f"{tag}.dlq",
        partitions=partitions,
        redis_prefix=tag,
        state_dir=tmp_path / "state",
    )
    topics.ensure_topics(test_settings)
    yield test_settings
    _cleanup(test_settings)


def _cleanup(settings: Settings) -> None:
    try:
        topics.delete_topics(settings, topics.project_topics(settings))
    except JobpulseError as exc:
        print(f"[jobpulse] could not delete test topics: {exc}", file=sys.stderr)
    try:
        conn = redis.Redis.from_url(settings.redis_url)
        try:
            keys = [settings.redis_prefix, *conn.scan_iter(match=f"{settings.redis_prefix}:*")]
            conn.delete(*keys)
        finally:
            conn.close()
    except redis.RedisError as exc:
        print(f"[jobpulse] could not delete test keys: {exc}", file=sys.stderr)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A Redis client for ``settings.redis_url`` (responses are bytes)."""
    conn = redis.Redis.from_url(settings.redis_url, decode_responses=False)
    yield conn
    conn.close()


def run_cli(
    settings: Settings,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobpulse *args`` with ``settings`` (+ ``env``) as its environment."""
    full_env = child_env(settings, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "jobpulse", *args],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``jobpulse: ...`` error line of a failed command (and no traceback)."""
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("jobpulse:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def spawn_cli(
    settings: Settings,
    *args: str,
    env: Mapping[str, str] | None = None,
    **popen_kwargs: Any,
) -> subprocess.Popen[str]:
    """Start ``python -m jobpulse *args`` in the background with ``settings`` (+ ``env``).

    Text mode, no stdin, stdout and stderr piped — each overridable through ``popen_kwargs``.
    """
    options: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
        **popen_kwargs,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jobpulse", *args],
        env=child_env(settings, **(env or {})),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        **options,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away ``redis-server`` of one test (never the shared one) on a free port, with
    no persistence and optionally ``--requirepass``; stopped and restarted by pid (it comes
    back empty)."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server not found: run `make deps`", pytrace=False)
        self.port = free_port()
        self.password = password
        self.directory = directory
        self.command = [
            server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory),
            *(["--requirepass", password] if password is not None else []),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL (with the password, when it has one)."""
        auth = f"default:{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start it and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                assert self.process.poll() is None, "the private redis-server exited"
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s); a paused one is resumed first."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            processes.stop_child(self.process, signal.SIGTERM, 10)


@contextlib.contextmanager
def recounted(settings: Settings, cli: CliRunner, *args: str) -> Iterator[Store]:
    """A from-scratch recount of ``settings``' offers topic (fresh Redis prefix, recovery store
    and deltas topic, ``run --once *args``); yields its :class:`Store`, then cleans up."""
    fresh = settings.with_overrides(
        redis_prefix=settings.redis_prefix + "-recount",
        deltas_topic=settings.deltas_topic + ".recount",
    )
    topics.ensure_topics(fresh, [fresh.deltas_topic])
    try:
        recount = cli(fresh, "run", "--once", *args, timeout=300)
        assert recount.returncode == 0, recount.stderr
        yield Store.connect(fresh)
    finally:
        topics.delete_topics(fresh, [fresh.deltas_topic])
        Store.connect(fresh).clear()


@pytest.fixture
def cli() -> CliRunner:
    """``cli(settings, *args, env=None, timeout=120) -> CompletedProcess[str]``."""
    return run_cli


# -- PostgreSQL: a schema per test ----------------------------------------------------------


@pytest.fixture
def sink_settings(settings: Settings) -> Iterator[Settings]:
    """``settings`` plus a rows topic (3 partitions) and a schema of this test in the stack's
    PostgreSQL database."""
    tag = settings.redis_prefix
    name = tag.replace("-", "_")
    with pg.connect(settings, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    test_settings = settings.with_overrides(
        rows_topic=f"{tag}.rows", postgres_url=schema_url(settings.postgres_url, name)
    )
    topics.ensure_topics(test_settings, [f"{tag}.rows"], partitions=3)
    yield test_settings
    topics.delete_topics(test_settings, [f"{tag}.rows"])
    forget_progress(test_settings)
    with pg.connect(settings, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def schema_url(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (``options=-csearch_path=…``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def forget_progress(settings: Settings) -> None:
    """Delete the sink's consumer group: the next run reads the topic from the start."""
    admin = kafka.admin(settings)
    assert settings.rows_topic
    for future in admin.delete_consumer_groups(
        [sink_group(settings.rows_topic)], request_timeout=10
    ).values():
        with contextlib.suppress(Exception):  # never committed: nothing to delete
            future.result()
