"""Processes, in one place: the local services by pid file, child processes that never
outlive their parent, and the stop signals.

- Services (Kafka, Redis of ``jobpulse stack``): started detached, found and stopped by pid
  file. A pid file is JSON ``{"pid", "create_time", "cmdline"}``: the create time guards
  against a recycled pid, so ``down`` never signals a process it did not start.
- Children that never outlive their parent: :func:`spawn_jobpulse` (a new ``jobpulse``
  process: the demo's dataflow and producer, the dashboard's processes) and
  :func:`fork_child` (a copy of this one: a local cluster's dataflow processes), both with
  :func:`die_with_parent`; :func:`stop_child` stops either.
- Signals: :func:`graceful_stop` — the first Ctrl-C/SIGTERM asks for a clean stop
  (:data:`STOP_REQUESTED`), a second Ctrl-C interrupts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
import psutil

from jobpulse.errors import JobpulseError, ServiceUnavailable

#: Popen objects of children started by this interpreter, so stopping them can reap them
#: (and Python does not warn about a child still running when the object is collected).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Tool:
    """An executable a service needs, with the fix shown when it is missing."""

    name: str
    fix: str


def require_tools(tools: Sequence[Tool]) -> dict[str, str]:
    """Paths of ``tools`` on PATH; one error naming every missing tool and its fix."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for tool in tools:
        path = shutil.which(tool.name)
        if path is None:
            missing.append(f"{tool.name} not found: {tool.fix}")
        else:
            found[tool.name] = path
    if missing:
        raise JobpulseError("; ".join(missing))
    return found


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says about a process this project started."""

    pid: int
    create_time: float
    cmdline: list[str]

    def process(self) -> psutil.Process | None:
        """The live process, or ``None`` if it exited or the pid now belongs to another."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


def read_pid(pid_file: Path) -> PidRecord | None:
    """The record in ``pid_file`` if the process is still alive; stale files are removed."""
    try:
        data = orjson.loads(pid_file.read_bytes())
        record = PidRecord(int(data["pid"]), float(data["create_time"]), list(data["cmdline"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.process() is None:
        pid_file.unlink(missing_ok=True)
        return None
    return record


def start_detached(cmd: Sequence[str], log_file: Path, pid_file: Path) -> PidRecord:
    """Start ``cmd`` in its own session with output appended to ``log_file``; write ``pid_file``.

    The child outlives this process (``jobpulse stack up`` returns while services keep running).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    record = PidRecord(proc.pid, psutil.Process(proc.pid).create_time(), list(cmd))
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(record.__dict__))
    tmp.replace(pid_file)
    return record


def exited_early(record: PidRecord) -> int | None:
    """Exit code if the started process has already died (``None`` while it runs)."""
    child = _CHILDREN.get(record.pid)
    if child is not None:
        return child.poll()
    return None if record.process() is not None else -1


def stop(record: PidRecord, timeout: float = 30.0) -> None:
    """SIGTERM the process (SIGKILL after ``timeout`` s) and wait until it is gone."""
    proc = record.process()
    if proc is None:
        _reap(record.pid)
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    if not _wait_gone(record, timeout):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
        _wait_gone(record, 10.0)
    _reap(record.pid)


def _wait_gone(record: PidRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = _CHILDREN.get(record.pid)
        if child is not None and child.poll() is not None:
            return True
        if record.process() is None:
            return True
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def listen_addresses(record: PidRecord) -> list[tuple[str, int]] | None:
    """The TCP ``(ip, port)`` pairs the process listens on (IPv4-mapped IPv6 as IPv4);
    ``None`` if that cannot be told (process gone, or no permission to look)."""
    proc = record.process()
    return None if proc is None else _listen_addresses(proc)


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` listens on TCP ``port`` (False if it is gone) — asked without
    connecting, which a listener would take for a client (Bytewax's cluster port expects a
    handshake)."""
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return False
    return any(lport == port for _, lport in _listen_addresses(proc) or [])


def _listen_addresses(proc: psutil.Process) -> list[tuple[str, int]] | None:
    try:
        conns = proc.net_connections(kind="tcp")
    except psutil.Error:
        return None
    return [
        (_plain_ip(conn.laddr.ip), conn.laddr.port)
        for conn in conns
        if conn.status == psutil.CONN_LISTEN and conn.laddr
    ]


def serves_at(record: PidRecord, host: str, port: int) -> bool | None:
    """Whether the process listens at ``host:port`` (a wildcard address counts).

    ``None`` when it listens on no TCP port yet (still starting) or that cannot be told;
    ``False`` when it listens elsewhere only: it does not serve the configured address.
    """
    addresses = listen_addresses(record)
    if not addresses:
        return None
    wanted = _host_ips(host) | {"0.0.0.0", "::"}
    return any(ip in wanted and lport == port for ip, lport in addresses)


def _host_ips(host: str) -> set[str]:
    """Every IP address ``host`` resolves to (none if it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {_plain_ip(str(info[4][0])) for info in infos}


def _plain_ip(ip: str) -> str:
    """``::ffff:127.0.0.1`` → ``127.0.0.1`` (an IPv4 socket seen through IPv6)."""
    return ip.removeprefix("::ffff:")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    failed: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``check`` until it is true; ``failed`` returns a reason to give up early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if failed is not None and (reason := failed()) is not None:
            raise ServiceUnavailable(f"{what}: {reason}")
        time.sleep(0.2)
    raise ServiceUnavailable(f"{what}: not ready after {timeout:.0f}s")


def is_local_host(host: str) -> bool:
    """Whether ``host`` names this machine (only then can jobpulse start a service for it)."""
    return host in {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0", socket.gethostname()}


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock so two concurrent ``stack up``/``down`` do not race."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- children ----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def seconds_since_start() -> float:
    """How long ago this process started (a fork: was forked), to the kernel's clock tick.

    Its start time in ``/proc/self/stat`` against ``CLOCK_BOOTTIME``, both counted from boot.
    (psutil's ``create_time()`` adds the boot time, which ``/proc/stat`` gives in whole
    seconds: up to a second off.)
    """
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()  # the name may hold spaces
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def _prctl(option: int, value: int = 0) -> int | None:
    """Linux's ``prctl(option, value)`` for the calling thread: its result, or None where
    there is no such call (another system) or it failed."""
    import ctypes

    try:
        result = int(ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0))
    except (OSError, AttributeError):
        return None
    return result if result >= 0 else None


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child before exec (``preexec_fn``): get ``signum`` when the parent dies, however
    it dies (``kill -9``, a broken pipe, a crash). Linux only; a no-op elsewhere."""
    _prctl(_PR_SET_PDEATHSIG, signum)


_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30


def timer_slack() -> int | None:
    """The calling thread's timer slack in ns (None where Linux's prctl is not there)."""
    return _prctl(_PR_GET_TIMERSLACK)


def set_timer_slack(nanoseconds: int) -> None:
    """How late the calling thread's timed waits (sleeps, poll timeouts) may wake, so the
    kernel can batch its wake-ups (Linux ``PR_SET_TIMERSLACK``). Threads it starts inherit
    the value. A no-op elsewhere."""
    _prctl(_PR_SET_TIMERSLACK, nanoseconds)


def spawn_jobpulse(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    output: IO[bytes] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python -P -m jobpulse *args`` as a child that gets SIGTERM when this process
    dies, however it dies; the installed ``jobpulse`` runs whatever the working directory
    holds.

    SIGINT is back to its default in the child (a process started in the background
    inherits an ignored SIGINT). ``new_session``: the terminal's Ctrl-C does not reach the
    child; the parent decides when it stops. ``output``: stdout and stderr (default:
    inherited).
    """

    def before_exec() -> None:
        die_with_parent(signal.SIGTERM)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        # -P (Python 3.11's "safe path"): ``-m`` would otherwise put the working directory
        # first on sys.path, and a ``jobpulse/`` source folder there (a checkout, the image's
        # build context) would shadow the installed package: half of it is missing from that
        # folder (``jobpulse.dashboard`` lives in ``dashboard/``), so the child fails.
        [sys.executable, "-P", "-m", "jobpulse", *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=new_session,
        preexec_fn=before_exec,
    )


class ForkedChild:
    """A child made by :func:`fork_child`, with the part of ``Popen``'s interface the
    launchers use (``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``kill``), so
    :func:`stop_child` stops either kind."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status once it has exited (-N: killed by signal N, as ``Popen``)."""
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_child(
    target: Callable[[], int],
    *,
    parent_death_signal: int = signal.SIGTERM,
    ignore_stop_signals: bool = False,
) -> ForkedChild:
    """Run ``target()`` in a forked copy of this process; its return value is the child's
    exit status. Linux only (``os.fork`` and ``prctl``).

    Why fork rather than :func:`spawn_jobpulse`: the child starts with everything the parent
    has loaded — interpreter, imports, the geocoder's grid — instead of paying ≈ 1 s of CPU to
    load them again, and shares those pages with it (copy-on-write; ``gc.freeze()`` before the
    fork keeps the collector from touching them). The parent must fork before it starts any
    thread the child would need, and the child never returns into the parent's stack: it
    leaves with ``os._exit``, so no ``finally`` or ``atexit`` of the parent (a lock release,
    a lease release) runs in it. An exception ``target`` lets out is printed and exits 70.
    """
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would print the parent's buffered output again
    pid = os.fork()
    if pid:
        return ForkedChild(pid)
    code = 70  # EX_SOFTWARE: target raised
    try:
        die_with_parent(parent_death_signal)
        if os.getppid() != parent:  # the parent died before prctl took effect
            code = 128 + parent_death_signal
        else:
            if ignore_stop_signals:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            code = target()
    except BaseException:  # the child must reach os._exit whatever happened
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to a process group that may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_child(
    child: subprocess.Popen[bytes] | ForkedChild,
    signum: int = signal.SIGTERM,
    grace_s: float = 15.0,
) -> int:
    """Ask a child to stop with ``signum``; SIGKILL it if it has not within ``grace_s``."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


# -- stop signals ------------------------------------------------------------------------

#: Set by the first Ctrl-C/SIGTERM in :func:`stop_signals`: whatever restarts work later
#: (e.g. the dataflow after its offers topic grew) must not undo a stop the user asked for.
STOP_REQUESTED = threading.Event()


@dataclass
class StopSignals:
    """How many times Ctrl-C / SIGTERM arrived (1: stop cleanly, 2: give up)."""

    count: int = 0


@contextlib.contextmanager
def stop_signals(
    on_first: Callable[[], None] | None = None,
    announce: Callable[[], None] | None = None,
    *,
    interrupt_on_second: bool = False,
) -> Iterator[StopSignals]:
    """Count Ctrl-C/SIGTERM instead of dying: the first calls ``announce()`` and
    ``on_first()`` and sets :data:`STOP_REQUESTED`; with ``interrupt_on_second`` a second
    Ctrl-C raises KeyboardInterrupt. Handlers are restored on exit; outside the main thread
    signals are left alone.

    Counting instead of raising matters where C code runs Python callbacks: a
    KeyboardInterrupt raised inside librdkafka's ``poll`` surfaces as ``SystemError``. A stop
    asked for before (see :func:`defer_stop_signals`) counts as the first signal.
    """
    stop = StopSignals(count=1 if STOP_REQUESTED.is_set() else 0)

    def handle(signum: int, _frame: object) -> None:
        stop.count += 1
        if stop.count > 1:
            if interrupt_on_second and signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        STOP_REQUESTED.set()
        if announce is not None:
            announce()
        if on_first is not None:
            on_first()

    try:
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def defer_stop_signals() -> None:
    """From now on, a first Ctrl-C/SIGTERM only sets :data:`STOP_REQUESTED`, which the
    command's own :func:`stop_signals` picks up: a stop while it is still starting up is a
    clean stop, not a KeyboardInterrupt. A second Ctrl-C still interrupts."""

    def handle(signum: int, _frame: object) -> None:
        if STOP_REQUESTED.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        STOP_REQUESTED.set()

    with contextlib.suppress(ValueError):  # not the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handle)
