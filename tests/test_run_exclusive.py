"""One run at a time: the recovery store's flock and the Redis prefix's lease."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from conftest import CliRunner, one_error_line, spawn_cli

from jobpulse.dataflows.exclusive import AlreadyRunning, RecoveryLock, RunLease
from jobpulse.offer import Offer
from jobpulse.settings import Settings
from jobpulse.store import Store, totals

pytestmark = pytest.mark.integration


def _start(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return spawn_cli(settings, "run", *args, env=env, stdout=subprocess.DEVNULL)


def _wait_for_lease(settings: Settings, process: subprocess.Popen) -> dict:
    store = Store.connect(settings)
    deadline = time.monotonic() + 60
    while (value := store.client.get(store.keys.lease)) is None:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the run never took the lease"
        time.sleep(0.05)
    return orjson.loads(value)


def _wait_until_counted(settings: Settings, processes: list[subprocess.Popen]) -> None:
    """Until the one offer produced is counted: every process is up and running."""
    store = Store.connect(settings)
    deadline = time.monotonic() + 60
    while totals(store.partitions().values()).records < 1:
        for process in processes:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the run never counted the offer"
        time.sleep(0.05)


def _produce_one(settings: Settings) -> None:
    producer = Producer(settings.kafka_client_config())
    producer.produce(settings.offers_topic, Offer(id="o-1").to_json(), b"o-1")
    assert producer.flush(30) == 0


def _stop(process: subprocess.Popen, *, signalled: bool = False) -> str:
    if process.poll() is None and not signalled:
        process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return stderr


@pytest.mark.partitions(2)
def test_a_second_run_is_refused_while_the_first_runs(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    _produce_one(settings)
    first = _start(settings, "--processes", "2")  # a local cluster: its children run too
    try:
        holder = _wait_for_lease(settings, first)
        _wait_until_counted(settings, [first])
        assert holder["pid"] == first.pid  # the launcher holds it, not its children

        same_store = cli(settings, "run", "--once")
        assert same_store.returncode == 1
        line = one_error_line(same_store)
        assert line.startswith("jobpulse: another jobpulse run holds the recovery store")
        assert f"pid {first.pid}" in line and "since " in line

        # Another recovery dir (e.g. another machine) on the same Redis prefix.
        other = cli(settings, "run", "--once", "--recovery-dir", str(tmp_path / "other"))
        assert other.returncode == 1
        line = one_error_line(other)
        assert f"another jobpulse run holds Redis prefix '{settings.redis_prefix}'" in line
        assert f"pid {first.pid}" in line
        assert first.poll() is None  # the first run is unaffected
    finally:
        stderr = _stop(first)
    assert first.returncode == 0, stderr

    # Released on exit: the next run starts at once.
    store = Store.connect(settings)
    assert store.client.get(store.keys.lease) is None
    again = cli(settings, "run", "--once")
    assert again.returncode == 0, again.stderr


@pytest.mark.partitions(2)
def test_external_cluster_members_share_the_run_and_only_process_0_holds_the_lease(
    settings: Settings, tmp_path: Path
) -> None:
    """Kubernetes: every pod is a cluster member started with BYTEWAX_* variables, all on
    one recovery volume and one Redis prefix."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    addresses = ";".join(f"127.0.0.1:{port}" for port in ports)
    recovery = str(tmp_path / "shared-volume")
    _produce_one(settings)
    members = [
        _start(
            settings,
            "--recovery-dir",
            recovery,
            env={"BYTEWAX_ADDRESSES": addresses, "BYTEWAX_PROCESS_ID": str(i)},
        )
        for i in range(2)
    ]
    try:
        holder = _wait_for_lease(settings, members[0])
        assert holder["pid"] == members[0].pid
        _wait_until_counted(settings, members)
    finally:
        for member in members:  # every pod gets its SIGTERM/SIGINT
            if member.poll() is None:
                member.send_signal(signal.SIGINT)
        outputs = [_stop(m, signalled=True) for m in members]
    for member, stderr in zip(members, outputs, strict=True):
        assert member.returncode == 0, stderr
        assert "another jobpulse run" not in stderr
    store = Store.connect(settings)
    assert store.client.get(store.keys.lease) is None


def test_the_recovery_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = RecoveryLock.acquire(tmp_path / "store")
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        RecoveryLock.acquire(tmp_path / "store")
    lock.release()
    RecoveryLock.acquire(tmp_path / "store").release()


def test_the_lease_is_exclusive_renewed_and_taken_over_from_a_dead_run(
    settings: Settings, tmp_path: Path
) -> None:
    store = Store.connect(settings)
    # Held by a live process of this host (this test's parent): refused, naming it.
    alive = {"host": socket.gethostname(), "pid": os.getppid(), "since": "earlier"}
    store.client.set(store.keys.lease, orjson.dumps(alive), px=60_000)
    with pytest.raises(
        AlreadyRunning, match=f"holds Redis prefix .* since earlier .pid {os.getppid()}"
    ):
        RunLease.acquire(Store.connect(settings), tmp_path / "other")
    store.client.delete(store.keys.lease)

    lease = RunLease.acquire(store, tmp_path, ttl_s=0.6)
    try:
        time.sleep(1.0)  # longer than the TTL: only the renewals keep it
        assert store.client.get(store.keys.lease) == lease.value.encode()
        store.clear()  # what --recount does: the next renewal takes it back
        assert lease.renew()
        assert not lease.lost.is_set()
    finally:
        lease.release()
    assert store.client.get(store.keys.lease) is None

    # A lease left behind by a process of this host that is gone is taken over at once.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    orphan = orjson.loads(lease.value) | {"pid": int(dead.stdout)}
    store.client.set(store.keys.lease, orjson.dumps(orphan), px=60_000)
    taken = RunLease.acquire(Store.connect(settings), tmp_path)
    try:
        assert store.client.get(store.keys.lease) == taken.value.encode()
    finally:
        taken.release()


def test_a_run_that_loses_its_lease_stops(settings: Settings, tmp_path: Path) -> None:
    store = Store.connect(settings)
    lease = RunLease.acquire(store, tmp_path, ttl_s=0.3)
    stopped: list[bool] = []
    lease.on_lost = lambda: stopped.append(True)
    try:
        store.client.set(store.keys.lease, b'{"pid": 1, "host": "elsewhere"}')
        assert lease.lost.wait(5)
        assert stopped == [True]
    finally:
        lease.release()
    assert store.client.get(store.keys.lease) == b'{"pid": 1, "host": "elsewhere"}'
