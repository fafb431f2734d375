"""The dataflow against a hand-written plain loop (``benchmarks/_plain_loop.py``), same input.

    python -m benchmarks.versus_loop [--offers 200000] [--rounds 3] [--partitions 12]

Produces ``--offers`` synthetic offers once (``jobpulse produce --synthetic --count N --seed 7``)
to a fresh offers topic of ``--partitions`` partitions, then runs ``--rounds`` interleaved
rounds of three contenders (each round starting one contender later), each in a subprocess
with its own Redis prefix, deltas and DLQ topics, consumer group and state dir (so a new
recovery store):

- ``loop``:   ``python -m benchmarks._plain_loop`` (one plain confluent-kafka loop);
- ``run 1w``: ``jobpulse run --once --workers 1``;
- ``run 2p``: ``jobpulse run --once --processes 2 --workers 1``.

Measured per run:

- *end to end*: records / (process start → exit), interpreter start and imports included;
- *in process*: the run's own figure: the loop's JSON line (first poll → end, its k-d tree
  loaded before) or the dataflow's summary line (from after the geocoder's warm-up to the
  end: Bytewax start-up and the last snapshot included; with ``--processes 2`` the forking
  of the two cluster processes too, which inherit the launcher's warm-up);
- *CPU*: user + system seconds from ``os.wait4`` on the child, which include every
  descendant it waited for (a local cluster's launcher waits for its processes);
- *peak memory*: the tree's, the largest sum of PSS (proportional set size: a page shared by
  n processes counts 1/n in each, so a local cluster's forks, which share what the launcher
  loaded, are not counted twice) over the process and its descendants, sampled with psutil
  every 50 ms (a shorter peak can be missed), in one extra *memory round* after the timed
  ones: reading a process's PSS walks its page tables under its memory-map lock, which
  slowed the processes it sampled (three for ``run 2p``, one for the others: ``run 2p`` /
  ``run 1w`` CPU per record 1.22 sampled against 1.09 not); and ``ru_maxrss`` from
  ``os.wait4``, the largest single process of the tree (exact, free), in every round.

After each run its result is compared with the first loop run's: the Redis breakdown (open
offers per category × continent), the opened/closed windows, the partition counters summed
(records, DLQ, unknown deletes, stale, late) and the number of deltas written. For this input
all of them are deterministic (each offer's records are keyed to one partition, timestamps
never go back), so any difference is printed as a MISMATCH and the exit status is 1. Prints a
table of every run, the medians and the ratios jobpulse / loop. Everything it created (topics,
Redis prefixes, consumer groups, state dirs) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil

from jobpulse import kafka, topics
from jobpulse import settings as settings_module
from jobpulse.delta import Cell
from jobpulse.settings import Settings, child_env
from jobpulse.store import PartitionProgress, Store, WindowCounts, totals

REPO = Path(__file__).resolve().parent.parent
LOOP = "loop"
#: contender → its command after ``python -m``.
CONTENDERS: dict[str, list[str]] = {
    LOOP: ["benchmarks._plain_loop"],
    "run 1w": ["jobpulse", "run", "--once", "--workers", "1"],
    "run 2p": ["jobpulse", "run", "--once", "--processes", "2", "--workers", "1"],
}
#: The dataflow's summary line: "processed N records in S s (R/s)".
SUMMARY_RE = re.compile(r"processed (\d+) records in [\d.]+s \(([\d,]+)/s\)")
#: Each dataflow process's start-up line (dataflows/runner.py).
START_UP_RE = re.compile(r"first record read ([\d.]+)s after the process started, ([\d.]+)s")
RSS_SAMPLE_S = 0.05


@dataclass
class Measurement:
    """One run of one contender."""

    contender: str
    round: int
    records: int
    wall_s: float
    inproc_rate: float
    cpu_s: float
    tree_rss_mb: float
    max_rss_mb: float
    #: The extra round that samples memory (its times are not counted).
    memory_round: bool = False

    @property
    def e2e_rate(self) -> float:
        return self.records / self.wall_s

    @property
    def inproc_s(self) -> float:
        return self.records / self.inproc_rate

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_s / self.records * 1e6


@dataclass
class Outcome:
    """What a run left behind, to compare with the plain loop's."""

    cells: dict[Cell, int]
    windows: list[WindowCounts]
    counters: PartitionProgress
    deltas: int

    def differences(self, reference: Outcome) -> list[str]:
        found = []
        if self.cells != reference.cells:
            cells = sorted(set(self.cells) | set(reference.cells))
            found += [
                f"{c.category} × {c.continent}: {self.cells.get(c, 0)} vs loop "
                f"{reference.cells.get(c, 0)}"
                for c in cells
                if self.cells.get(c, 0) != reference.cells.get(c, 0)
            ]
        if self.windows != reference.windows:
            found.append("opened/closed windows differ")
        if self.counters != reference.counters:
            found.append(f"counters {self.counters} vs loop {reference.counters}")
        if self.deltas != reference.deltas:
            found.append(f"{self.deltas} deltas written vs loop {reference.deltas}")
        return found


@dataclass
class Bench:
    """The shared offers topic and everything created per run (removed at the end)."""

    base: Settings
    tag: str
    workdir: Path
    runs: list[Settings] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    @property
    def offers(self) -> Settings:
        return self.base.with_overrides(offers_topic=f"{self.tag}.offers")

    def run_settings(self, round_: int, contender: str) -> Settings:
        name = f"r{round_}-{contender.replace(' ', '-')}"
        settings = self.offers.with_overrides(
            deltas_topic=f"{self.tag}.{name}.deltas",
            dlq_topic=f"{self.tag}.{name}.dlq",
            redis_prefix=f"{self.tag}-{name}",
            state_dir=self.workdir / name,
        )
        self.runs.append(settings)
        topics.ensure_topics(settings, [settings.deltas_topic, settings.dlq_topic])
        return settings

    def clean_up(self) -> None:
        """Best effort: topics, Redis prefixes and consumer groups of this benchmark."""
        names = [self.offers.offers_topic]
        names += [t for s in self.runs for t in (s.deltas_topic, s.dlq_topic)]
        _quietly(lambda: topics.delete_topics(self.base, names))
        for settings in self.runs:
            _quietly(lambda s=settings: Store.connect(s).clear())
        if self.groups:
            admin = topics.admin_client(self.base)
            for future in admin.delete_consumer_groups(self.groups, request_timeout=30).values():
                _quietly(future.result)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:
        print(f"clean-up: {exc}", file=sys.stderr)


def produce_offers(settings: Settings, count: int, seed: int) -> float:
    """``jobpulse produce --synthetic`` into the offers topic; the seconds it took."""
    began = time.monotonic()
    command = ["jobpulse", "produce", "--synthetic", "--count", str(count), "--seed", str(seed)]
    subprocess.run(
        [sys.executable, "-m", *command],
        env=child_env(settings),
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return time.monotonic() - began


def messages_in(settings: Settings, topic: str) -> int:
    """The sum of ``topic``'s high watermarks (its record count: nothing is deleted)."""
    from confluent_kafka import TopicPartition

    consumer = kafka.consumer(settings, required={"group.id": "jobpulse-bench-watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


class TreeRss:
    """Samples the summed PSS of a process and its descendants; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for process in tree:
                with contextlib.suppress(psutil.Error):  # it exited meanwhile
                    total += process.memory_full_info().pss
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


@dataclass
class Finished:
    """A child's exit: status, wall time, CPU and memory, output."""

    status: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    tree_rss_mb: float
    stdout: str
    stderr: str


def run_measured(
    command: list[str], env: dict[str, str], logs: Path, *, sample_memory: bool
) -> Finished:
    """Run ``command``, timing it from start to exit; reap it with ``os.wait4``;
    ``sample_memory``: sample the tree's PSS meanwhile (else it is NaN)."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout", logs / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        began = time.monotonic()
        child = subprocess.Popen(
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        rss = TreeRss(child.pid) if sample_memory else None
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - began
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Finished(
        status=child.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,
        tree_rss_mb=rss.stop() if rss is not None else math.nan,
        stdout=out.read_text(errors="replace"),
        stderr=err.read_text(errors="replace"),
    )


def in_process_rate(contender: str, finished: Finished) -> float:
    """The run's own records/s: the loop's JSON line, the dataflow's summary line."""
    if contender == LOOP:
        return float(orjson.loads(finished.stdout.strip().splitlines()[-1])["records_per_s"])
    found = SUMMARY_RE.search(finished.stderr)
    if found is None:
        raise RuntimeError("no summary line in the dataflow's output")
    return float(found.group(2).replace(",", ""))


def command_for(contender: str, settings: Settings, group: str) -> list[str]:
    command = [sys.executable, "-m", *CONTENDERS[contender]]
    if contender == LOOP:
        command += ["--offers-topic", settings.offers_topic, "--deltas-topic"]
        command += [settings.deltas_topic, "--dlq-topic", settings.dlq_topic]
        command += ["--redis-prefix", settings.redis_prefix, "--group", group]
    return command


def outcome_of(settings: Settings) -> Outcome:
    store = Store.connect(settings)
    try:
        return Outcome(
            cells=store.cells(),
            windows=store.windows(last=10_000),
            counters=totals(store.partitions().values()),
            deltas=messages_in(settings, settings.deltas_topic),
        )
    finally:
        store.client.close()


def one_run(
    bench: Bench, round_: int, contender: str, records: int, *, memory: bool = False
) -> tuple[Measurement, Outcome] | None:
    """Run one contender once (``memory``: the memory round, PSS sampled); None (after
    saying why) if it failed."""
    settings = bench.run_settings(round_, contender)
    group = f"{settings.redis_prefix}.loop"
    if contender == LOOP:
        bench.groups.append(group)
    finished = run_measured(
        command_for(contender, settings, group),
        child_env(settings),
        bench.workdir / "logs" / f"r{round_}-{contender.replace(' ', '-')}",
        sample_memory=memory,
    )
    if finished.status != 0:
        tail = "\n    ".join(finished.stderr.strip().splitlines()[-5:])
        print(f"FAILED: round {round_} {contender}: exit {finished.status}\n    {tail}")
        return None
    measurement = Measurement(
        contender=contender,
        round=round_,
        records=records,
        wall_s=finished.wall_s,
        inproc_rate=in_process_rate(contender, finished),
        cpu_s=finished.cpu_s,
        tree_rss_mb=finished.tree_rss_mb,
        max_rss_mb=finished.max_rss_mb,
        memory_round=memory,
    )
    if contender == LOOP:
        print(f"round {round_} loop's own line: {finished.stdout.strip().splitlines()[-1]}")
    for start_up in START_UP_RE.finditer(finished.stderr):
        print(
            f"round {round_} {contender}: first record {start_up[1]}s after the process "
            f"started, {start_up[2]}s after its imports"
        )
    return measurement, outcome_of(settings)


HEADER = (
    f"{'round':>5} {'contender':<8} {'e2e s':>6} {'e2e rec/s':>10} {'in-proc s':>9} "
    f"{'in-proc rec/s':>13} {'CPU s':>6} {'CPU µs/rec':>10} {'tree PSS MB':>11} "
    f"{'max proc MB':>11}"
)


def row(label: str, contender: str, m: dict[str, float]) -> str:
    return (
        f"{label:>5} {contender:<8} {m['wall_s']:>6.2f} {m['e2e_rate']:>10,.0f} "
        f"{m['inproc_s']:>9.2f} {m['inproc_rate']:>13,.0f} {m['cpu_s']:>6.2f} "
        f"{m['cpu_us']:>10.1f} {_mb(m['tree_rss_mb']):>11} {m['max_rss_mb']:>11.0f}"
    )


def _mb(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def figures(m: Measurement) -> dict[str, float]:
    return {
        "wall_s": m.wall_s,
        "e2e_rate": m.e2e_rate,
        "inproc_s": m.inproc_s,
        "inproc_rate": m.inproc_rate,
        "cpu_s": m.cpu_s,
        "cpu_us": m.cpu_us_per_record,
        "tree_rss_mb": m.tree_rss_mb,
        "max_rss_mb": m.max_rss_mb,
    }


def medians(measurements: list[Measurement]) -> dict[str, dict[str, float]]:
    """contender → the median of each figure over its runs."""
    result: dict[str, dict[str, float]] = {}
    for contender in CONTENDERS:
        runs = [figures(m) for m in measurements if m.contender == contender]
        if runs:
            result[contender] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return result


def report(all_runs: list[Measurement]) -> None:
    measurements = [m for m in all_runs if not m.memory_round]
    print()
    print(HEADER)
    for m in sorted(all_runs, key=lambda m: (m.round, list(CONTENDERS).index(m.contender))):
        print(row("mem" if m.memory_round else str(m.round), m.contender, figures(m)))
    middle = medians(measurements)
    for m in all_runs:  # the medians' memory: the memory round's
        if m.memory_round and m.contender in middle:
            middle[m.contender]["tree_rss_mb"] = m.tree_rss_mb
    for contender, m in middle.items():
        print(row("med", contender, m))
    print("(mem: the memory round, PSS sampled every 50 ms; its times are not in the medians)")
    print()
    paired_ratios(measurements)
    loop = middle.get(LOOP)
    if loop is None:
        return
    print("\njobpulse / loop (medians): e2e rec/s, in-process rec/s, CPU µs/record, tree PSS")
    for contender, m in middle.items():
        if contender != LOOP:
            print(
                f"  {contender:<8} {m['e2e_rate'] / loop['e2e_rate']:.2f}  "
                f"{m['inproc_rate'] / loop['inproc_rate']:.2f}  "
                f"{m['cpu_us'] / loop['cpu_us']:.2f}  "
                f"{m['tree_rss_mb'] / loop['tree_rss_mb']:.2f}"
            )


ONE, TWO = "run 1w", "run 2p"


def paired_ratios(measurements: list[Measurement]) -> None:
    """Paired ratios, round by round (the contenders of a round ran back to back, so a slower
    spell of the shared machine weighs on all of them), and their medians: end to end over
    the loop, and CPU per record of 2 processes over 1 process."""
    for contender in (ONE, TWO):
        per_round(measurements, contender, LOOP, "end to end", lambda m: m.e2e_rate)
    per_round(measurements, TWO, ONE, "CPU µs/record", lambda m: m.cpu_us_per_record)


def per_round(
    measurements: list[Measurement],
    top: str,
    bottom: str,
    what: str,
    figure: Callable[[Measurement], float],
) -> list[float]:
    """Print and return ``figure(top) / figure(bottom)`` of each round with both."""
    of = {(m.round, m.contender): figure(m) for m in measurements}
    ratios = [
        of[(r, top)] / of[(r, bottom)]
        for r in sorted({m.round for m in measurements})
        if (r, top) in of and (r, bottom) in of
    ]
    if ratios:
        print(
            f"{top} / {bottom}, {what}, per round: "
            f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}"
        )
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus_loop")
    parser.add_argument("--offers", type=int, default=200_000, help="synthetic offers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=12, help="of the offers topic")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    base = settings_module.load(partitions=args.partitions)
    with tempfile.TemporaryDirectory(prefix="jobpulse-versus-") as workdir:
        bench = Bench(base, f"bench-vs-{uuid.uuid4().hex[:8]}", Path(workdir))
        try:
            return compare(bench, args.offers, args.rounds, args.seed)
        finally:
            bench.clean_up()


def rotated(contenders: list[str], by: int) -> list[str]:
    """The order of one round: each round starts one contender later, so none always runs
    right after the same other one (the broker and the page cache are still busy with what
    the previous run wrote). Round 1 starts with the loop, the reference."""
    by %= len(contenders)
    return contenders[by:] + contenders[:by]


def compare(bench: Bench, offers: int, rounds: int, seed: int) -> int:
    settings = bench.offers
    topics.ensure_topics(settings, [settings.offers_topic])
    seconds = produce_offers(settings, offers, seed)
    records = messages_in(settings, settings.offers_topic)
    print(f"produced {records} offers to {settings.offers_topic} in {seconds:.1f}s", flush=True)
    measurements: list[Measurement] = []
    reference: Outcome | None = None
    failed = False
    # The timed rounds, then the memory round (numbered after them).
    plan = [
        (round_, contender, False)
        for round_ in range(1, rounds + 1)
        for contender in rotated(list(CONTENDERS), round_ - 1)
    ] + [(rounds + 1, contender, True) for contender in CONTENDERS]
    for round_, contender, memory in plan:
        done = one_run(bench, round_, contender, records, memory=memory)
        if done is None:
            failed = True
            continue
        measurement, outcome = done
        measurements.append(measurement)
        if reference is None and contender == LOOP:
            reference = outcome
        differences = [] if reference is None else outcome.differences(reference)
        if outcome.counters.records != records:
            differences.append(f"{outcome.counters.records} records read, {records} exist")
        for difference in differences:
            print(f"MISMATCH round {round_} {contender}: {difference}")
        failed = failed or bool(differences)
        print(
            f"round {round_} {contender}: {measurement.wall_s:.1f}s end to end, "
            f"{measurement.inproc_rate:,.0f} records/s in process, "
            f"{'same result as the loop' if not differences else 'DIFFERENT RESULT'}",
            flush=True,
        )
    report(measurements)
    if reference is not None:
        print(
            f"\nresult: {sum(reference.cells.values())} open offers in {len(reference.cells)} "
            f"cells, {reference.deltas} deltas, {reference.counters.dlq} DLQ, "
            f"{len(reference.windows)} windows"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
