"""The local stack: real Kafka, Redis and PostgreSQL answer, and ``jobpulse stack
up|down|status`` behave (PostgreSQL's own cases: test_stack_postgres.py)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import psutil
import pytest
import redis
from confluent_kafka import Consumer, Producer

from jobpulse import pg, topics
from jobpulse import settings as settings_module
from jobpulse.settings import Settings
from jobpulse.stack import kafka, lifecycle, postgres

if TYPE_CHECKING:
    from conftest import CliRunner

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_kafka_port() -> int:
    """A free port whose successor (the KRaft controller port) is free as well."""
    for _ in range(50):
        port = _free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


SERVICES = {"kafka", "redis", "postgres"}


def _private_stack_settings(state_dir: Path) -> Settings:
    """Settings for a second, private stack: its own ports and state dir (never the shared one)."""
    return settings_module.load(
        env={},
        kafka_bootstrap=f"localhost:{_free_kafka_port()}",
        redis_url=f"redis://localhost:{_free_port()}/0",
        postgres_url=f"postgresql://jobpulse@localhost:{_free_port()}/jobpulse",
        state_dir=state_dir,
    )


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A temporary folder other users can enter: run as root, PostgreSQL runs as the
    ``postgres`` user, which cannot reach into pytest's own (mode 0700) temporary folders."""
    folder = Path(tempfile.mkdtemp(prefix="jobpulse-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _pids(state_dir: Path) -> dict[str, int]:
    run = state_dir / "run"
    return {p.stem: int(orjson.loads(p.read_bytes())["pid"]) for p in run.glob("*.pid")}


def _service_lines(output: str) -> dict[str, str]:
    """``{"kafka": line, "redis": line, "postgres": line}`` from a stack command's output."""
    return {
        line.split()[0]: line
        for line in output.splitlines()
        if line.split() and line.split()[0] in SERVICES
    }


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def private_stack(open_dir: Path, cli: CliRunner) -> Iterator[Settings]:
    """A private stack's settings; whatever it left running is stopped at teardown."""
    private = _private_stack_settings(open_dir / "private-state")
    yield private
    cli(private, "stack", "down")


def test_stack_fixture_services_answer(stack: Settings) -> None:
    states = {s.name: s for s in lifecycle.status(stack)}
    assert states["kafka"].up and states["redis"].up and states["postgres"].up
    assert topics.cluster_metadata(stack).brokers
    conn = redis.Redis.from_url(stack.redis_url)
    assert conn.ping() is True
    conn.close()
    with pg.connect(stack) as db:
        assert db.execute("SELECT current_database(), 1 + 1").fetchone() == (
            pg.target(stack).dbname,
            2,
        )


def test_message_round_trips_through_kafka(settings: Settings) -> None:
    key, value = uuid.uuid4().hex.encode(), orjson.dumps({"id": 1, "title": "Rust dev"})
    producer = Producer(settings.kafka_client_config())
    delivered: list[object] = []
    producer.produce(
        settings.offers_topic,
        key=key,
        value=value,
        headers={"origin": b"test"},
        on_delivery=lambda err, msg: delivered.append(err or msg),
    )
    assert producer.flush(15) == 0
    assert len(delivered) == 1 and not isinstance(delivered[0], Exception)

    consumer = Consumer(
        settings.kafka_client_config(
            **{"group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.offers_topic])
    try:
        got = None
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got = msg
                break
        assert got is not None, "message not consumed within 30s"
        assert (got.key(), got.value()) == (key, value)
        assert dict(got.headers()) == {"origin": b"test"}
    finally:
        consumer.close()


def test_redis_answers(redis_client: redis.Redis, settings: Settings) -> None:
    key = f"{settings.redis_prefix}:probe"
    assert redis_client.ping() is True
    redis_client.set(key, b"\x00value")
    assert redis_client.get(key) == b"\x00value"
    assert int(redis_client.info("server")["redis_version"].split(".")[0]) >= 7


def test_up_twice_is_a_noop_and_down_leaves_no_process(
    private_stack: Settings, cli: CliRunner
) -> None:
    first = cli(private_stack, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert set(_service_lines(first.stdout)) == SERVICES
    assert all(" started " in line for line in _service_lines(first.stdout).values())
    assert f"kafka {kafka.KAFKA_VERSION}" in first.stdout and "redis 7" in first.stdout
    assert re.search(r"postgres \d+\.\d+", first.stdout)
    assert "stack up in" in first.stdout
    pids = _pids(private_stack.state_dir)
    assert set(pids) == SERVICES
    assert all(psutil.pid_exists(pid) for pid in pids.values())

    second = cli(private_stack, "stack", "up")
    assert second.returncode == 0, second.stderr
    lines = _service_lines(second.stdout)
    assert set(lines) == SERVICES
    assert all("already running" in line for line in lines.values())
    assert "stack already running" in second.stdout
    assert _pids(private_stack.state_dir) == pids

    status = cli(private_stack, "stack", "status")
    assert status.returncode == 0, status.stderr
    assert private_stack.kafka_bootstrap in status.stdout
    assert private_stack.redis_url in status.stdout
    assert private_stack.postgres_url in status.stdout

    down = cli(private_stack, "stack", "down")
    assert down.returncode == 0, down.stderr
    lines = _service_lines(down.stdout)
    assert set(lines) == SERVICES
    assert all("stopped" in line for line in lines.values())
    assert all(_gone(pid) for pid in pids.values())
    assert not list((private_stack.state_dir / "run").glob("*.pid"))
    after = cli(private_stack, "stack", "status")
    assert after.returncode == 3
    assert all(" down " in line for line in _service_lines(after.stdout).values())


def test_up_starts_nothing_for_services_already_reachable(
    stack: Settings, tmp_path: Path, cli: CliRunner
) -> None:
    elsewhere = stack.with_overrides(state_dir=tmp_path / "other-state")
    result = cli(elsewhere, "stack", "up")
    assert result.returncode == 0, result.stderr
    lines = _service_lines(result.stdout)
    assert set(lines) == SERVICES
    assert all("external" in line for line in lines.values())
    assert not (elsewhere.state_dir / "run").exists() or not list(
        (elsewhere.state_dir / "run").glob("*.pid")
    )
    down = cli(elsewhere, "stack", "down")
    assert down.returncode == 0
    assert all("left running" in line for line in _service_lines(down.stdout).values())
    assert all(s.up for s in lifecycle.status(stack))


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only links to ``tools`` (so every other executable is missing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        target = subprocess.run(["which", tool], capture_output=True, text=True, check=True)
        os.symlink(target.stdout.strip(), bin_dir / tool)
    return str(bin_dir)


def test_missing_java_gives_one_clear_message(
    private_stack: Settings, tmp_path: Path, cli: CliRunner
) -> None:
    result = cli(
        private_stack, "stack", "up", env={"PATH": _path_with(tmp_path, "redis-server", "mvn")}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "java not found" in lines[0] and "make deps" in lines[0]
    assert "redis-server" not in lines[0]
    if postgres.DEBIAN_LIB in (postgres.bin_dir() or Path("/")).parents:
        # Debian's PostgreSQL is found off PATH, in /usr/lib/postgresql/<version>/bin.
        assert "initdb" not in lines[0]
    # Nothing was started half-way.
    assert not _pids(private_stack.state_dir)


def test_missing_tools_are_all_named(
    private_stack: Settings, tmp_path: Path, cli: CliRunner
) -> None:
    result = cli(private_stack, "stack", "up", env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "java not found" in result.stderr
    assert "redis-server not found" in result.stderr


def test_generated_kafka_config_follows_settings(tmp_path: Path) -> None:
    custom = settings_module.load(
        env={}, kafka_bootstrap="localhost:19092", partitions=5, state_dir=tmp_path
    )
    props = dict(
        line.split("=", 1)
        for line in kafka.server_properties(custom, kafka.Paths(custom)).splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:19092"
    assert props["num.partitions"] == "5"
    assert props["log.dirs"] == str((tmp_path / "kafka" / "data").resolve())
    assert props["process.roles"] == "broker,controller"


def test_kafka_cluster_id_format() -> None:
    ids = {kafka.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(cid) == 22 and not cid.startswith("-") for cid in ids)
