"""Running the dataflow: pre-flight checks, the recovery store, one process or a local cluster.

- One process (default): the dataflow runs here with ``--workers`` worker threads.
- ``--processes P``: P child processes on loopback form one Bytewax cluster. They are forks
  of this process made once everything is loaded (imports, the geocoder), so a second
  process costs its share of the work, not another start-up; Ctrl-C or a failing child
  stops them all, and children die with the parent (PR_SET_PDEATHSIG).
- Cluster member (``--addresses``/``BYTEWAX_ADDRESSES``): one process of an external cluster,
  e.g. one pod of the Kubernetes StatefulSet.

Recovery: state snapshots go to a Bytewax recovery directory every ``snapshot_interval``; on
restart the dataflow resumes from the last snapshot, replaying at most one interval of input.
The store is initialised on first use with ``JOBPULSE_PARTITIONS`` SQLite files: how many
files the snapshot writes are spread over, not a cap on workers — any cluster size resumes
from it, because the state is keyed by offer-id shard (:data:`.open_offers.SHARDS`), not by
offers partition.

Scaling: ``jobpulse topics grow`` adds offers partitions; a live run notices within
``JOBPULSE_PARTITION_CHECK_SECONDS``, finishes what is in flight, snapshots, and restarts
itself to read them (a local cluster restarts its processes; a cluster member exits with
:data:`EXIT_TOPIC_GREW` so its supervisor restarts it).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import orjson
import redis

from jobpulse import processes
from jobpulse.errors import JobpulseError, UsageError, error_line
from jobpulse.offer import UNKNOWN
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress, Store, totals

from .exclusive import RecoveryLock, RunLease
from .open_offers import SHARDS

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import ClusterMetadata

log = logging.getLogger("jobpulse.dataflow")

DEFAULT_SNAPSHOT_INTERVAL_S = 5.0

#: What the saved state's keys mean; a recovery store made with another layout cannot resume.
LAYOUT_FILE = "jobpulse-layout.json"
STATE_LAYOUT = {
    "version": 4,
    "state": "offer-key shards",
    "key": "blake2b-128",
    "shards": SHARDS,
    "store": "sorted runs",
}

#: Exit status of a cluster member that stopped because the offers topic grew (restart it).
EXIT_TOPIC_GREW = 75

T = TypeVar("T")


class OffersTopicGrew(JobpulseError):
    """The offers topic has more partitions than this run reads: restart to read them all."""

    exit_code = EXIT_TOPIC_GREW

    def __init__(self, topic: str, before: int, after: int) -> None:
        super().__init__(
            f"the offers topic {topic} grew from {before} to {after} partitions: "
            "stopped cleanly; restart the run to read the new ones"
        )
        self.before, self.after = before, after


@dataclass(frozen=True)
class RunOptions:
    workers: int = 1
    processes: int = 1
    recovery_dir: Path | None = None
    once: bool = False
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S
    #: Cluster member mode: this process's index and every process's host:port.
    process_id: int | None = None
    addresses: list[str] | None = None
    #: A process of a local cluster (``--processes``): its launcher speaks for the run.
    launched: bool = False
    #: A new recovery store may replace the counts already under the Redis prefix.
    recount: bool = False

    @property
    def speaks_for_run(self) -> bool:
        """This process warns and reports for the whole run: a one-process run, a local
        cluster's launcher, or process 0 of an external cluster (e.g. pod 0)."""
        return not self.launched and (self.process_id or 0) == 0


@dataclass(frozen=True)
class _Plan:
    """What the dataflow of this run is: the same in every process of a local cluster."""

    settings: Settings
    options: RunOptions
    recovery_dir: Path
    #: The offers partitions to read (all the topic has at the start).
    partitions: list[int]
    #: ``--once``: where each partition ends (partition → offset); None: a live run.
    end: Mapping[int, int] | None
    professions: dict[int, str]


def default_recovery_dir(settings: Settings) -> Path:
    """One recovery store per (offers topic, Redis prefix): the state belongs to both."""
    return settings.state_dir / "recovery" / f"{settings.offers_topic}@{settings.redis_prefix}"


def run(settings: Settings, options: RunOptions) -> None:
    """Run the dataflow until the end (``--once``), Ctrl-C, or a failure."""
    entered = time.monotonic()  # the command's imports are done
    # The dataflow's own modules (Bytewax, numpy, the steps) load on a thread while this one
    # waits for Redis and Kafka to answer the checks below: ≈ 0.1 s off the first record.
    threading.Thread(target=_import_the_dataflow, name=_IMPORT_THREAD, daemon=True).start()
    try:
        _run(settings, options)
    finally:
        _log_start_up(entered)


_IMPORT_THREAD = "import-dataflow"


def _import_the_dataflow() -> None:
    from bytewax._bytewax import cli_main  # noqa: F401
    from bytewax.recovery import RecoveryConfig  # noqa: F401

    from . import flow, geocoding, kafka_io, redis_sink  # noqa: F401


def _log_start_up(entered: float) -> None:
    """How long this process took to read its first record: from its start and from the end
    of the command's imports (a benchmark reads this line)."""
    from .kafka_io import FIRST_RECORD_AT

    if FIRST_RECORD_AT:
        since_start = processes.seconds_since_start() - (time.monotonic() - FIRST_RECORD_AT[0])
        log.info(
            "first record read %.2fs after the process started, %.2fs after its imports",
            since_start,
            FIRST_RECORD_AT[0] - entered,
        )


def _run(settings: Settings, options: RunOptions) -> None:
    _check_options(settings, options)
    from .professions import load_professions

    professions = load_professions(settings.professions)  # a bad file fails before anything
    if settings.professions is None and options.speaks_for_run:
        log.warning(
            "JOBPULSE_PROFESSIONS is not set: offers with only a profession_id count as "
            "category %s",
            UNKNOWN,
        )
    # Kafka is asked on a thread while Redis answers here: the offers consumer is made and
    # connected, the topics checked through it and, for ``--once``, the end offsets read.
    kafka_side = _InBackground(_start_kafka, settings, options.once)
    store = Store.connect(settings)  # the one Redis client of this process (not the sinks')
    try:
        started = kafka_side.result()
        try:
            offers_partitions = preflight(settings, started.metadata)
            recovery_dir = options.recovery_dir or default_recovery_dir(settings)
            with _exclusive(store, options, recovery_dir) as lease:
                _run_exclusively(
                    settings,
                    store,
                    options,
                    recovery_dir,
                    offers_partitions,
                    professions,
                    lease,
                    started,
                )
        finally:
            started.close()
    finally:
        store.client.close()


@dataclass
class _KafkaStart:
    """What :func:`_start_kafka` prepared: the offers consumer, connected (the source's first
    reader takes it; None once taken), the cluster's metadata, and the ``--once`` end."""

    consumer: Consumer | None
    metadata: ClusterMetadata
    end: Mapping[int, int] | None

    def take_consumer(self) -> Consumer | None:
        consumer, self.consumer = self.consumer, None
        return consumer

    def close(self) -> None:
        """Close the consumer if nothing took it (e.g. before forking a local cluster: a
        librdkafka client does not survive a fork)."""
        consumer = self.take_consumer()
        if consumer is not None:
            consumer.close()


def _start_kafka(settings: Settings, once: bool) -> _KafkaStart:
    """The offers consumer, made and connected while the rest starts: one client for the
    checks, the end offsets and the source (≈ 0.1 s off the first record)."""
    from jobpulse.topics import cluster_metadata

    from .kafka_io import end_offsets, offers_consumer

    consumer = offers_consumer(settings, stop_at_end=once)
    try:
        metadata = cluster_metadata(settings, client=consumer)
        offers = metadata.topics.get(settings.offers_topic)
        end = None
        if once and offers is not None:  # (a missing topic: preflight says so)
            end = end_offsets(consumer, settings.offers_topic, offers.partitions)
    except BaseException:
        consumer.close()
        raise
    return _KafkaStart(consumer, metadata, end)


class _InBackground(Generic[T]):
    """``function(*args)`` started now on a daemon thread (it never holds up the exit);
    :meth:`result` waits for it and returns its value or raises its exception."""

    def __init__(self, function: Callable[..., T], *args: object) -> None:
        self._outcome: list[tuple[T | None, BaseException | None]] = []

        def call() -> None:
            try:
                self._outcome.append((function(*args), None))
            except BaseException as exc:  # handed to result()
                self._outcome.append((None, exc))

        self._thread = threading.Thread(target=call, name=function.__name__, daemon=True)
        self._thread.start()

    def result(self) -> T:
        self._thread.join()
        value, error = self._outcome[0]
        if error is not None:
            raise error
        return value  # type: ignore[return-value]


@contextlib.contextmanager
def _exclusive(store: Store, options: RunOptions, recovery_dir: Path) -> Iterator[RunLease | None]:
    """Hold the recovery store's lock (a launching process) and the Redis prefix's lease
    (the process that speaks for the run) for the whole run; see :mod:`.exclusive`."""
    lock = RecoveryLock.acquire(recovery_dir) if options.addresses is None else None
    try:
        lease = RunLease.acquire(store, recovery_dir) if options.speaks_for_run else None
        try:
            yield lease
        finally:
            if lease is not None:
                lease.release()
        if lease is not None and lease.lost.is_set():
            raise JobpulseError(
                f"stopped: another jobpulse run took the Redis lease of {store.keys.prefix!r}"
            )
    finally:
        if lock is not None:
            lock.release()


def _run_exclusively(
    settings: Settings,
    store: Store,
    options: RunOptions,
    recovery_dir: Path,
    offers_partitions: list[int],
    professions: dict[int, str],
    lease: RunLease | None,
    kafka_side: _KafkaStart,
) -> None:
    new_store = ensure_recovery_dir(
        recovery_dir,
        settings.partitions,
        before_init=lambda: claim_prefix(store, recovery_dir, recount=options.recount),
    )
    if options.recount and not new_store and options.addresses is None:
        # (A cluster member may find the store another member just made: not an error.)
        raise UsageError(
            f"--recount needs a new recovery store, but {recovery_dir} exists and would "
            "resume: delete it or pass another --recovery-dir to recount from offset 0"
        )
    if lease is not None and new_store and options.recount:
        lease.renew()  # --recount cleared the prefix, the lease key with it
    plan = _Plan(
        settings,
        options,
        recovery_dir,
        offers_partitions,
        kafka_side.end,
        professions,
    )
    from . import geocoding

    geocoding.warm_up()  # before the clock starts: the summary rate is the dataflow's
    _freeze_startup_objects()
    before = _progress(store)
    started = time.monotonic()
    processes.STOP_REQUESTED.clear()
    while True:
        try:
            if options.processes > 1 and options.addresses is None:
                kafka_side.close()
                _launch_local_cluster(plan, lease)
            else:
                _run_here(plan, lease, kafka_side.take_consumer())
            break
        except OffersTopicGrew as grew:
            if options.addresses is not None or options.launched:
                raise  # a cluster member: its supervisor restarts it (the launcher, k8s)
            if processes.STOP_REQUESTED.is_set():
                break  # Ctrl-C/SIGTERM came too: stop, the next start reads every partition
            log.warning("%s: restarting now", str(grew).split(":")[0])
            with _graceful_stop(lambda: None, announce=False):  # a signal here still stops
                plan = replace(plan, partitions=preflight(settings))
            if processes.STOP_REQUESTED.is_set():
                break
    if not options.launched:
        _print_summary(store, before, time.monotonic() - started, once=options.once)


def _check_options(settings: Settings, options: RunOptions) -> None:
    if options.workers < 1 or options.processes < 1:
        raise UsageError("--workers and --processes must be at least 1")
    if options.snapshot_interval_s <= 0:
        raise UsageError("--snapshot-interval must be positive")
    count = len(options.addresses) if options.addresses else options.processes
    total = options.workers * count
    if total > SHARDS:
        raise UsageError(
            f"{total} workers is more than the {SHARDS} state shards, the most workers "
            "that can hold state"
        )
    if options.addresses is not None and (
        options.process_id is None or not 0 <= options.process_id < len(options.addresses)
    ):
        raise UsageError(
            f"--process-id must be 0..{len(options.addresses) - 1} with "
            f"{len(options.addresses)} addresses"
        )


def preflight(settings: Settings, metadata: ClusterMetadata | None = None) -> list[int]:
    """Kafka and the three topics are there (in ``metadata`` when given, else asked now);
    return the offers partitions."""
    from jobpulse.topics import project_topics, topic_partitions

    existing = topic_partitions(settings, project_topics(settings), metadata)
    missing = [t for t in project_topics(settings) if t not in existing]
    if missing:
        raise UsageError(
            f"topic(s) {', '.join(missing)} do not exist at {settings.kafka_display}: "
            "create them with `jobpulse topics create`"
        )
    return list(range(existing[settings.offers_topic]))


def ensure_recovery_dir(
    path: Path, partitions: int, *, before_init: Callable[[], None] | None = None
) -> bool:
    """Create and initialise the recovery store on first use (safe against concurrent starts).

    ``before_init`` runs first when the store is new (under the init lock); if it raises,
    nothing is initialised. Returns whether it was initialised now, i.e. the dataflow
    starts from empty state.
    """
    from bytewax.recovery import init_db_dir

    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(path / ".init.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            layout_file = path / LAYOUT_FILE
            if any(path.glob("part-*.sqlite3")):
                found = orjson.loads(layout_file.read_bytes()) if layout_file.exists() else None
                if found != STATE_LAYOUT:
                    raise UsageError(
                        f"the recovery store {path} was made with state layout {found}; this "
                        f"version keys state by offer id ({STATE_LAYOUT}) and cannot resume "
                        "it: recount into a new store (`jobpulse run --recount --recovery-dir "
                        "NEW_DIR`, or delete this one), which rereads the offers topic from "
                        "offset 0"
                    )
                return False
            if before_init is not None:
                before_init()
            init_db_dir(path, partitions)
            layout_file.write_bytes(orjson.dumps(STATE_LAYOUT))
            log.info("initialised recovery store %s with %d partitions", path, partitions)
            return True
    except OSError as exc:
        raise UsageError(f"cannot use the recovery directory {path}: {exc}") from None


def claim_prefix(store: Store, recovery_dir: Path, *, recount: bool) -> None:
    """Before a new recovery store starts counting from offset 0 into the Redis prefix.

    A fresh prefix is simply used. A prefix that already holds counts was written by another
    recovery store (another directory, another ``--recovery-dir``, a deleted state dir):
    replacing those counts must be asked for with ``recount``, then the old keys go (a cell
    the recount never touches would otherwise stay stale).
    """
    if store.breakdown().version == 0:  # nothing was ever written under this prefix
        return
    if not recount:
        raise UsageError(
            f"Redis prefix {store.keys.prefix!r} already holds jobpulse counts, but the "
            f"recovery store {recovery_dir.resolve()} is new: point --recovery-dir at the "
            "store that wrote them, or pass --recount to replace them (recount from offset 0)"
        )
    removed = store.clear()
    log.warning(
        "--recount: removed %d Redis keys under %s:* before recounting from offset 0",
        removed,
        store.keys.prefix,
    )


def _run_here(plan: _Plan, lease: RunLease | None, consumer: Consumer | None = None) -> None:
    """The dataflow in this process (with its worker threads), until it ends or stops;
    ``consumer``: a connected offers consumer for the source (see :func:`_start_kafka`)."""
    settings, options, recovery_dir, partitions, end = (
        plan.settings,
        plan.options,
        plan.recovery_dir,
        plan.partitions,
        plan.end,
    )
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig

    from .dlq import stand_in
    from .flow import FlowSinks, build_flow
    from .kafka_io import STOP, OffersSource, PartitionWatch, ProducerSink
    from .redis_sink import RedisSink

    _serve_metrics(settings, options)
    poller = _LazyPoller(options)
    flow = build_flow(
        settings,
        OffersSource(
            settings,
            partitions,
            end_offsets=end,
            consumer=consumer,
            on_worker_thread=poller.workers_run,
        ),
        FlowSinks(
            deltas=ProducerSink(settings, settings.deltas_topic),
            dlq=ProducerSink(settings, settings.dlq_topic, too_large=stand_in),
            redis=RedisSink(settings),
            rows=ProducerSink(settings, settings.rows_topic) if settings.rows_topic else None,
        ),
        plan.professions,
        offers_partitions=len(partitions),
        recovery_dir=recovery_dir,
    )
    STOP.clear()
    watch = None if end is not None else PartitionWatch(settings, len(partitions))
    log.info(
        "dataflow: %s (%d partitions) → %s, %s, Redis %s %s:*; %d worker(s)%s; recovery %s",
        settings.offers_topic,
        len(partitions),
        settings.deltas_topic,
        settings.dlq_topic,
        settings.redis_display,
        settings.redis_prefix,
        options.workers,
        f", process {options.process_id} of {len(options.addresses)}" if options.addresses else "",
        recovery_dir,
    )
    if lease is not None:
        lease.on_lost = STOP.set
    if watch is not None:
        watch.start()
    try:
        # A local cluster's launcher announces the stop once for all its processes.
        with _graceful_stop(STOP.set, announce=not options.launched), poller.around_bytewax():
            cli_main(
                flow,
                workers_per_process=options.workers,
                process_id=options.process_id,
                addresses=options.addresses,
                epoch_interval=timedelta(seconds=options.snapshot_interval_s),
                recovery_config=RecoveryConfig(str(recovery_dir), backup_interval=timedelta(0)),
            )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # bytewax wraps step errors; report the root cause in one line
        if _caused_by_interrupt(exc):
            raise KeyboardInterrupt from None  # the second Ctrl-C: exit 130, not a failure
        log.debug("dataflow failed", exc_info=True)
        raise JobpulseError(f"the dataflow stopped: {_root_cause(exc)}") from None
    finally:
        if watch is not None:
            watch.stop()
    if watch is not None and watch.grew_to is not None:
        raise OffersTopicGrew(settings.offers_topic, len(partitions), watch.grew_to)


#: How late the thread that calls Bytewax's cluster mode may wake (see :class:`_LazyPoller`).
POLLER_TIMER_SLACK_NS = 20_000_000
#: Sent by the first worker thread to the main thread: the workers run, poll lazily now.
_WORKERS_RUN = signal.SIGRTMIN + 7


def _polls(options: RunOptions) -> bool:
    """Whether Bytewax runs this process in cluster mode (several workers, or a member of a
    cluster), where the calling thread polls while worker threads run the dataflow."""
    return options.workers > 1 or options.addresses is not None


class _LazyPoller:
    """In cluster mode, let the thread that called Bytewax wake up to 20 ms late once the
    workers run.

    That thread waits for the workers by sleeping 1 ms and taking the GIL to check for
    signals, in a loop: ~1 000 wake-ups a second, each taking the GIL from the worker that
    holds it. With a timer slack of 20 ms (Linux ``PR_SET_TIMERSLACK``) the kernel wakes it
    ~50 times a second: a stop signal is seen ≤ 20 ms later, and a two-process run's context
    switches fell from ~27 000 to ~11 500 and its CPU by 7-12 % (docs/performance.md).

    Not before the workers run: the threads Bytewax starts inherit the slack, and the
    cluster's connecting and start-up would wait on lazy timers too. The only Python the
    calling thread runs inside Bytewax is its signal check, so the first worker thread
    (:meth:`workers_run`, on the source's first call) sends it a signal whose handler sets
    the slack there.
    """

    def __init__(self, options: RunOptions) -> None:
        #: The calling thread's timer slack, restored after Bytewax returns; None: not
        #: in cluster mode, not the main thread (only it gets signals) or not Linux.
        self._before = (
            processes.timer_slack()
            if _polls(options) and threading.current_thread() is threading.main_thread()
            else None
        )
        self._sent = threading.Event()

    def workers_run(self) -> None:
        """On a worker thread: tell the calling thread (once) that the workers run."""
        if self._before is not None and not self._sent.is_set():
            self._sent.set()
            signal.pthread_kill(threading.main_thread().ident or 0, _WORKERS_RUN)

    @contextlib.contextmanager
    def around_bytewax(self) -> Iterator[None]:
        before = self._before
        if before is None:
            yield
            return
        previous = signal.signal(
            _WORKERS_RUN, lambda _signum, _frame: processes.set_timer_slack(POLLER_TIMER_SLACK_NS)
        )
        try:
            yield
        finally:
            processes.set_timer_slack(before)
            signal.signal(_WORKERS_RUN, previous)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised because of, a :class:`KeyboardInterrupt`: the
    second Ctrl-C, raised by :func:`_graceful_stop`'s handler in the main thread wherever it
    was when the signal was handled.

    Bytewax 0.21 keeps the interrupt as the ``__cause__`` of what it raises (tested in
    tests/test_run_cli.py): a step or a source/sink method → ``BytewaxRuntimeError("error
    calling ...")`` ← ``BytewaxRuntimeError`` ← ``KeyboardInterrupt``; its own signal check
    between steps → ``BytewaxRuntimeError("signal received")`` ← ``KeyboardInterrupt``; with
    several worker threads the main thread only waits, and the interrupt comes bare. Where
    C code ran the handler and then returned as if nothing happened, CPython raises a
    ``SystemError`` whose ``__cause__`` is the interrupt. So the chain is walked
    (``__cause__`` and ``__context__``), never the messages: a failure whose text merely
    mentions an interrupt is still a failure.
    """
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue  # a chain can loop back on itself
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return True
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


# -- local cluster -------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _freeze_startup_objects() -> None:
    """Move everything loaded so far (modules, the geocoder, Bytewax, settings) out of the
    cyclic GC's reach, and collect the youngest generation less often.

    A full collection rescans every tracked object; without this, each one walks the
    hundreds of thousands loaded at start that will live as long as the process. The per-batch
    garbage is short-lived tuples and lists, freed by reference counting; raising the first
    threshold (700 → 50 000 allocations) trades a little memory for far fewer collections.
    No collection first: it would cost ≈ 40 ms of start-up to free a little start-up garbage.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _launch_local_cluster(plan: _Plan, lease: RunLease | None) -> None:
    """Fork ``options.processes`` cluster processes of this one and wait for them all."""
    settings, options = plan.settings, plan.options
    ports = _free_ports(options.processes)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    _ready_to_fork()
    children: list[processes.ForkedChild] = []
    for i in range(options.processes):
        if i > 0:
            _wait_until_listening(ports[i - 1], children[-1])
        children.append(
            # SIGKILL when the launcher dies; Ctrl-C/SIGTERM ignored until the child's own
            # handlers are set (the launcher repeats SIGTERM until every child has stopped).
            processes.fork_child(
                _cluster_process(
                    replace(
                        plan,
                        options=replace(options, process_id=i, addresses=addresses, launched=True),
                    )
                ),
                parent_death_signal=signal.SIGKILL,
                ignore_stop_signals=True,
            )
        )
    log.info(
        "local cluster: %d processes × %d workers on %s",
        len(children),
        options.workers,
        ";".join(addresses),
    )
    if lease is not None:
        lease.on_lost = lambda: _signal_all(children, signal.SIGTERM)
    stopping = threading.Event()

    def request_stop() -> None:
        stopping.set()
        _signal_all(children, signal.SIGTERM)

    with _graceful_stop(request_stop):
        try:
            grew = _wait_all(children, stopping)
        finally:
            _stop_children(children)
    if grew:
        raise OffersTopicGrew(settings.offers_topic, len(plan.partitions), len(preflight(settings)))


def _wait_until_listening(port: int, child: processes.ForkedChild, limit_s: float = 3.0) -> None:
    """Wait (at most ``limit_s``) until cluster process ``child`` listens on ``port``.

    Process *i* of a Bytewax cluster connects to every process below *i*, and one that finds
    a peer not listening yet retries only a second later: started all at once, the processes
    lose about a second to that. Started in order, each once the one before listens, they
    lose a few milliseconds. (A child that died or never listens is left to the launcher's
    wait, which reports it.)
    """
    deadline = time.monotonic() + limit_s
    while not processes.listens_on(child.pid, port) and child.poll() is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _ready_to_fork() -> None:
    """Finish the start-up thread (the dataflow's imports) so that the forks get its
    results, not a half-done copy; then freeze what was loaded, which the forks share with
    this process page for page."""
    from . import geocoding

    for thread in threading.enumerate():
        if thread.name == _IMPORT_THREAD:
            thread.join()
    geocoding.warm_up()  # done already unless the caller skipped it
    _freeze_startup_objects()


def _cluster_process(plan: _Plan) -> Callable[[], int]:
    """What a forked cluster process runs; returns its exit status (as ``jobpulse run
    --process-id i --addresses ...`` would exit)."""

    def main() -> int:
        forked = time.monotonic()
        try:
            _run_here(plan, None)
        except OffersTopicGrew:
            return EXIT_TOPIC_GREW
        except KeyboardInterrupt:
            return 130
        except JobpulseError as exc:
            print(error_line(exc), file=sys.stderr)
            return exc.exit_code
        except BaseException as exc:  # e.g. Bytewax's panic when a peer is gone
            print(f"jobpulse: dataflow process {plan.options.process_id}: {exc}", file=sys.stderr)
            return 70  # EX_SOFTWARE; the launcher names the member that broke the cluster
        finally:
            _log_start_up(forked)  # a fork has no imports of its own: both figures agree
        return 0

    return main


def _wait_all(children: list[processes.ForkedChild], stopping: threading.Event) -> bool:
    """Wait until every child exited 0 (False), or all stopped because the offers topic grew
    (True); a child failing otherwise stops the rest and raises. Once ``stopping``, SIGTERM
    is repeated every second: a child still starting up ignores it until it can stop cleanly.
    """
    resent = time.monotonic()
    while True:
        if stopping.is_set() and time.monotonic() - resent > 1.0:
            _signal_all(children, signal.SIGTERM)
            resent = time.monotonic()
        codes = [c.poll() for c in children]
        if EXIT_TOPIC_GREW in codes and all(c in (0, EXIT_TOPIC_GREW) for c in codes):
            return True  # every member saw the offers topic grow and stopped cleanly
        if EXIT_TOPIC_GREW in codes:
            # Each member notices the growth by itself within one check interval: wait.
            time.sleep(0.2)
            continue
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, code = _first_cause(children, failed)
            raise JobpulseError(
                f"dataflow process {i} exited with status {code}; stopped the others"
            )
        if all(c == 0 for c in codes):
            return False
        time.sleep(0.2)


def _first_cause(
    children: list[processes.ForkedChild], failed: list[tuple[int, int]]
) -> tuple[int, int]:
    """Stop a broken cluster and say which member broke it: (index, exit status).

    One member gone breaks the cluster: the others fail on the lost peer within moments
    (Bytewax panics) and could never finish, so they are killed at once — the recovery store
    is built for that. Their failures echo the first one; a member killed by a signal (a
    negative status) is the cause whichever was noticed first.
    """
    time.sleep(0.5)  # the echoes arrive, so the cause can be told from them
    codes = [(i, child.poll()) for i, child in enumerate(children)]
    _signal_all(children, signal.SIGKILL)
    for child in children:
        child.wait()
    killed = [(i, code) for i, code in codes if code is not None and code < 0]
    return killed[0] if killed else failed[0]


def _signal_all(children: list[processes.ForkedChild], signum: int) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signum)


def _stop_children(children: list[processes.ForkedChild]) -> None:
    """Ask the children still running to stop, then kill those that do not within 15 s."""
    _signal_all(children, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        processes.stop_child(child, signal.SIGTERM, max(0.1, deadline - time.monotonic()))


def _graceful_stop(
    on_first: Callable[[], None], *, announce: bool = True
) -> contextlib.AbstractContextManager[None]:
    """:func:`jobpulse.processes.stop_signals`, announced once per process (at INFO, or at
    DEBUG for a local cluster's children: their launcher speaks for the run)."""

    def say() -> None:
        log.log(
            logging.INFO if announce else logging.DEBUG,
            "stopping: finishing the batches in flight (Ctrl-C again to abort)",
        )

    return processes.stop_signals(on_first, say, interrupt_on_second=True)


# -- summary -------------------------------------------------------------------------------


def _progress(store: Store) -> PartitionProgress:
    try:
        return totals(store.partitions().values())
    except redis.RedisError:
        return PartitionProgress()


def _serve_metrics(settings: Settings, options: RunOptions) -> None:
    """``/metrics`` of this process (JOBPULSE_METRICS_PORT; process i of a local cluster on
    port + i, each pod of an external cluster on the port itself)."""
    from jobpulse import metrics

    metrics.serve(settings, "dataflow", offset=(options.process_id or 0) if options.launched else 0)


def _print_summary(store: Store, before: PartitionProgress, seconds: float, *, once: bool) -> None:
    from jobpulse import logs

    from . import progress

    progress.stop_active()  # its last line first, then the summary
    now = totals(store.partitions().values())
    records = now.records - before.records
    line = (
        f"processed {_throughput(records, seconds, once=once)}; since start: "
        f"{now.records} records, {now.dlq} to the DLQ, {now.unknown_deletes} deletes of unknown "
        f"offers, {now.stale} stale records, {now.late} late deltas; open offers: "
        f"{store.breakdown().total}"
    )
    if logs.is_json():  # a log shipper reads stderr: one more JSON line, not a plain one
        log.info("%s", line)
    else:
        print(line, file=sys.stderr)


def _throughput(records: int, seconds: float, *, once: bool) -> str:
    """A ``--once`` run reads all the time, so its rate means something; a live run waits
    for input most of the time, so a rate over its whole duration would not."""
    if once:
        rate = records / seconds if seconds > 0 else 0.0
        return f"{records} records in {seconds:.1f}s ({rate:,.0f}/s)"
    return f"{records} records over {seconds:.1f}s including idle time"
