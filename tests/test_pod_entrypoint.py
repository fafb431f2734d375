"""The dataflow pod's entry point, run for real: the StatefulSet's init and main container
commands, exactly as the production overlay renders them, started as local processes with
the environment a StatefulSet gives its pods (pod names, the one replica count), on one
shared recovery directory, rescaled 2 → 3 → 1 the way `jobpulse k8s rescale` does it (stop
every member, start the new size). Exact against the truth the test computes itself, against
``jobpulse verify`` and against a from-scratch recount.

What differs from a cluster, and why: the peers' names. The manifest's
``{pod}.{statefulset}:2101`` resolves through the cluster's DNS; here each member gets its own
loopback address instead (``127.0.<ordinal>.1``, one port), through the same
``BYTEWAX_ADDRESS_TEMPLATE`` — every pod still binds its own address and derives the others.
``/recovery`` is a temporary directory.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import CliRunner, free_port
from deploy import documents, one, rendered
from test_scaling import Feed, assert_exact, records_done

from jobpulse.settings import Settings, child_env

pytestmark = pytest.mark.integration

STATEFULSET = "jobpulse-dataflow"


def _pod_template() -> dict[str, Any]:
    """The production overlay's dataflow pod spec."""
    statefulset = one(documents(rendered("production")), "StatefulSet", STATEFULSET)
    return statefulset["spec"]["template"]["spec"]


def _argv(container: dict[str, Any], recovery: Path) -> list[str]:
    """The container's command (entry point ``jobpulse`` + args, ``$(VAR)`` expanded from its
    env, ``/recovery`` mapped to ``recovery``) as a local process of this interpreter."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    args = []
    for arg in container["args"]:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value or "")
        args.append(str(recovery) if arg == "/recovery" else arg)
    return [sys.executable, "-P", "-m", "jobpulse", *args]


def _pod_env(
    settings: Settings, container: dict[str, Any], ordinal: int, replicas: int, port: int
) -> dict[str, str]:
    """What a StatefulSet gives pod ``ordinal``: the container's env (the downward API's pod
    name filled in), the replica count, and the loopback stand-in for the peers' DNS names."""
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    env |= {
        "BYTEWAX_POD_NAME": f"{STATEFULSET}-{ordinal}",
        "BYTEWAX_REPLICAS": str(replicas),
        "BYTEWAX_ADDRESS_TEMPLATE": f"127.0.{{index}}.1:{port}",
    }
    return child_env(settings, **env)


class Pods:
    """The members of one cluster size, as processes (output into one log)."""

    def __init__(self, settings: Settings, recovery: Path, replicas: int, log: IO[str]) -> None:
        template = _pod_template()
        container = next(c for c in template["containers"] if c["name"] == "dataflow")
        port = free_port()
        self.envs = [_pod_env(settings, container, i, replicas, port) for i in range(replicas)]
        self.processes = [
            subprocess.Popen(
                _argv(container, recovery),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            for env in self.envs
        ]

    def assert_running(self) -> None:
        for i, process in enumerate(self.processes):
            assert process.poll() is None, f"pod {i} exited with {process.returncode}"

    def probe(self, ordinal: int) -> subprocess.CompletedProcess[str]:
        """The pod's readiness/liveness probe command, run with its environment."""
        command = _pod_template()["containers"][0]["readinessProbe"]["exec"]["command"]
        assert command[0] == "python"
        return subprocess.run(
            [sys.executable, *command[1:]],
            env=self.envs[ordinal],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> list[int]:
        """SIGTERM to every member, as scaling the StatefulSet to 0 does; their exit codes."""
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=60))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes


def _wait_counted(settings: Settings, pods: Pods, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while records_done(settings) < count:
        pods.assert_running()
        assert time.monotonic() < deadline, f"processed {records_done(settings)} of {count}"
        time.sleep(0.2)


def _wait_ready(pods: Pods, timeout: float = 120) -> list[str]:
    """Each member's probe line once all pass (the cluster formed)."""
    deadline = time.monotonic() + timeout
    while True:
        results = [pods.probe(i) for i in range(len(pods.processes))]
        if all(r.returncode == 0 for r in results):
            return [r.stdout.strip() for r in results]
        pods.assert_running()
        assert time.monotonic() < deadline, [r.stdout for r in results]
        time.sleep(1)


def test_the_pods_entry_point_rescales_2_3_1_exactly(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    template = _pod_template()
    (init,) = template["initContainers"]
    recovery = tmp_path / "recovery"
    # The init container: idempotent on the topics the fixture made.
    created = subprocess.run(
        _argv(init, recovery), env=child_env(settings), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    feed = Feed(settings, seed=13)
    log_path = tmp_path / "pods.log"
    figures = []
    with open(log_path, "w") as log:
        for replicas in (2, 3, 1):
            started = time.monotonic()
            pods = Pods(settings, recovery, replicas, log)
            try:
                for _ in range(400):
                    feed.send(feed.random_op(ids=300))
                feed.flush()
                _wait_counted(settings, pods, feed.sent)
                lines = _wait_ready(pods)
                peers = replicas - 1
                assert lines[0].endswith(
                    f"connected to {peers} of {peers} peers" if peers else "no peers to connect to"
                ), lines
            finally:
                codes = pods.stop()
            assert codes == [0] * replicas, log_path.read_text()[-3000:]
            figures.append((replicas, records_done(settings), round(time.monotonic() - started)))
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    print(f"\npod entry point: (replicas, records done, s) = {figures}")
    assert records_done(settings) == feed.sent
    assert_exact(settings, cli, feed)


def test_the_offers_deltas_and_rows_topics_are_kept_forever(sink_settings: Settings) -> None:
    """A lost recovery volume means a recount from offset 0: the broker's default retention
    (often 7 days) must not apply to the topics that are reread."""
    from confluent_kafka.admin import ConfigResource

    from jobpulse import topics

    admin = topics.admin_client(sink_settings)
    names = [sink_settings.offers_topic, sink_settings.deltas_topic, sink_settings.rows_topic]
    names += [sink_settings.dlq_topic]
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
    retention = {
        resource.name: future.result()["retention.ms"].value for resource, future in futures.items()
    }
    assert retention == {
        sink_settings.offers_topic: "-1",
        sink_settings.deltas_topic: "-1",
        sink_settings.rows_topic: "-1",
        sink_settings.dlq_topic: retention[sink_settings.dlq_topic],
    }
    assert retention[sink_settings.dlq_topic] != "-1"


def test_the_probe_counts_peers_from_the_kernels_table(tmp_path: Path) -> None:
    """Member 1 of 3 at 10.0.0.2:2101: it accepted member 2 and connected to member 0 (and a
    closed connection and an unrelated one do not count)."""
    import ipaddress

    from jobpulse.cli.kubernetes import established_peers

    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0200000A:0835 0300000A:9C40 01\n"  # 10.0.0.2:2101 ← 10.0.0.3 (accepted)
        "   1: 0200000A:9C41 0100000A:0835 01\n"  # 10.0.0.2 → 10.0.0.1:2101 (connected)
        "   2: 0200000A:9C42 0100000A:0835 06\n"  # TIME_WAIT: not a connection
        "   3: 0200000A:9C43 0900000A:1538 01\n"  # to another service
    )
    ip = ipaddress.ip_address
    own = (ip("10.0.0.2"), 2101)
    peers = [(ip("10.0.0.1"), 2101), (ip("10.0.0.3"), 2101)]
    assert established_peers(own, peers, [table]) == 2
    assert established_peers(own, peers, [tmp_path / "missing"]) == 0
