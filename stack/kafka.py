"""Apache Kafka, single node in KRaft mode (combined broker + controller), run natively on Java.

The jars come from Maven Central through ``stack/pom.xml`` into a cache folder outside the
source tree; the broker configuration is generated into the state dir on every start.
"""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from pathlib import Path

import psutil

from jobpulse import processes
from jobpulse.cache import cache_root
from jobpulse.errors import JobpulseError
from jobpulse.processes import PidRecord, Tool
from jobpulse.settings import Settings

#: Kafka release the stack runs; keep in step with <kafka.version> in stack/pom.xml.
KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
HEAP = ("-Xms128m", "-Xmx512m")
READY_TIMEOUT_S = 90.0

JAVA = Tool("java", "run `make deps` or apt-get install openjdk-17-jre-headless")
MAVEN = Tool("mvn", "run `make deps` or apt-get install maven")
POM = Path(__file__).with_name("pom.xml")
_VERSION_FLAG = "-Djobpulse.kafka.version="


def libs_dir() -> Path:
    """Folder holding the Kafka jars and their runtime dependencies."""
    return cache_root() / f"kafka-{KAFKA_VERSION}" / "libs"


def libs_present() -> bool:
    """Whether a complete copy of the jars is in the cache."""
    return (libs_dir() / ".complete").is_file()


def required_tools() -> list[Tool]:
    """Executables needed to start Kafka now (Maven only while the jars are missing)."""
    return [JAVA] if libs_present() else [JAVA, MAVEN]


def fetch_libs(*, quiet: bool = True) -> Path:
    """Copy Kafka and its runtime dependencies into :func:`libs_dir` (skipped when present)."""
    libs = libs_dir()
    if libs_present():
        return libs
    tools = processes.require_tools([MAVEN])
    cmd = [
        tools["mvn"],
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(POM),
        f"-Dkafka.version={KAFKA_VERSION}",
        f"-Dkafka.libs={libs}",
        "package",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise JobpulseError("fetching the Kafka jars with Maven failed:\n" + "\n".join(output))
    jars = sorted(p.name for p in libs.glob("*.jar"))
    if not any(name.startswith(f"kafka_2.13-{KAFKA_VERSION}") for name in jars):
        raise JobpulseError(f"Maven finished but {libs} holds no kafka_2.13-{KAFKA_VERSION}.jar")
    (libs / ".complete").write_text("\n".join(jars) + "\n")
    return libs


def java_major(java: str) -> int:
    """Major version of the ``java`` executable (``java -version`` prints to stderr)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise JobpulseError(f"cannot tell the Java version from {java!r}: {out.strip()[:200]}")
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_…".
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """Path of a Java ≥ 17, or a :class:`JobpulseError` saying how to get one."""
    java = processes.require_tools([JAVA])["java"]
    major = java_major(java)
    if major < MIN_JAVA:
        raise JobpulseError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, found Java {major} at {java}: "
            "apt-get install openjdk-17-jre-headless"
        )
    return java


class Paths:
    """Where Kafka keeps its files under the state dir."""

    def __init__(self, settings: Settings) -> None:
        state = settings.state_dir.resolve()
        self.home = state / "kafka"
        self.data = self.home / "data"
        self.properties = self.home / "server.properties"
        self.log4j = self.home / "log4j2.properties"
        self.log = state / "logs" / "kafka.log"
        self.stdout = state / "logs" / "kafka.out"
        self.pid = state / "run" / "kafka.pid"


def controller_port(settings: Settings) -> int:
    """The KRaft controller listens on the client port + 1 (9093 by default)."""
    return settings.kafka_port + 1


def bind_host(settings: Settings) -> str:
    """Interface the listeners bind to: loopback for ``localhost``, else the configured host."""
    host = settings.kafka_host
    return "127.0.0.1" if host in {"localhost", "127.0.0.1", ""} else host


def server_properties(settings: Settings, paths: Paths) -> str:
    """The broker + controller configuration, tuned for one small local node."""
    host = bind_host(settings)
    port, cport = settings.kafka_port, controller_port(settings)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{settings.kafka_host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(paths.data),
        "num.partitions": str(settings.partitions),
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        # Fewer internal partitions: the first consumer group is ready sooner.
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests start and stop consumer groups constantly; do not wait 3 s for joiners.
        "group.initial.rebalance.delay.ms": "0",
        # Two cores and a 512 MB heap: small thread pools and cleaner buffer.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.retention.hours": "168",
    }
    lines = [f"# Generated by jobpulse stack up (Kafka {KAFKA_VERSION}); edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def log4j_properties(paths: Paths) -> str:
    """Log4j 2 configuration: everything at INFO into one file under the state dir."""
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = file",
            f"appender.file.fileName = {paths.log}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = info",
            "rootLogger.appenderRef.file.ref = file",
            "logger.kafka.name = kafka",
            "logger.kafka.level = info",
            # The request logger is very chatty at INFO under test load.
            "logger.request.name = kafka.request.logger",
            "logger.request.level = warn",
            "",
        ]
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64, no padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java_cmd(java: str, paths: Paths, main: str, *args: str) -> list[str]:
    return [
        java,
        *HEAP,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        f"{_VERSION_FLAG}{KAFKA_VERSION}",
        "-cp",
        f"{libs_dir()}/*",
        main,
        *args,
    ]


def start(settings: Settings) -> PidRecord:
    """Write the config, format the storage on first start, and launch ``kafka.Kafka``."""
    java = check_java()
    fetch_libs()
    paths = Paths(settings)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    for port in (settings.kafka_port, controller_port(settings)):
        if processes.port_open(bind_host(settings), port):
            raise JobpulseError(
                f"port {port} is taken by a process that is not this Kafka: stop it, or point "
                "JOBPULSE_KAFKA_BOOTSTRAP at a free port (the controller uses port + 1)"
            )
    paths.properties.write_text(server_properties(settings, paths))
    paths.log4j.write_text(log4j_properties(paths))
    if not (paths.data / "meta.properties").is_file():
        fmt = _java_cmd(
            java,
            paths,
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            new_cluster_id(),
            "-c",
            str(paths.properties),
        )
        result = subprocess.run(fmt, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise JobpulseError(
                f"formatting Kafka storage in {paths.data} failed: "
                f"{(result.stdout + result.stderr).strip()[-800:]}"
            )
    cmd = _java_cmd(java, paths, "kafka.Kafka", str(paths.properties))
    return processes.start_detached(cmd, paths.stdout, paths.pid)


def exit_reason(settings: Settings, record: PidRecord) -> str | None:
    """Why a Kafka we just started is gone (``None`` while it runs)."""
    code = processes.exited_early(record)
    if code is None:
        return None
    paths = Paths(settings)
    return (
        f"Kafka exited (code {code}); see {paths.log} and {paths.stdout}:\n"
        + processes.tail(paths.stdout, 5)
        + "\n"
        + processes.tail(paths.log, 10)
    )


def running_version(port: int) -> str | None:
    """Kafka version of the jobpulse-started broker listening on ``port``, if it is one."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                continue
            try:
                cmdline = psutil.Process(conn.pid).cmdline()
            except psutil.Error:
                continue
            for arg in cmdline:
                if arg.startswith(_VERSION_FLAG):
                    return arg[len(_VERSION_FLAG) :]
    return None
