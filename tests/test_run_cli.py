"""``jobpulse run|breakdown|verify``: help, bad arguments and missing services → one line."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CliRunner, one_error_line

from jobpulse.settings import Settings


@pytest.mark.parametrize("command", ["run", "breakdown", "verify"])
def test_every_command_has_help(cli: CliRunner, command: str) -> None:
    result = cli(Settings(), command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


@pytest.mark.parametrize("command", [("run", "--once"), ("breakdown",), ("verify",)])
def test_missing_redis_is_one_clear_line(cli: CliRunner, command: tuple[str, ...]) -> None:
    result = cli(Settings(redis_url="redis://127.0.0.1:1/0"), *command, timeout=60)
    assert result.returncode == 1
    assert "Redis is not reachable" in one_error_line(result)


@pytest.mark.integration
def test_missing_kafka_is_one_clear_line(cli: CliRunner, settings: Settings) -> None:
    broken = settings.with_overrides(kafka_bootstrap="127.0.0.1:1")
    for command in (("run", "--once"), ("verify",)):
        result = cli(broken, *command, timeout=60)
        assert result.returncode == 1
        assert "Kafka at 127.0.0.1:1 is not reachable" in one_error_line(result)


@pytest.mark.integration
def test_missing_topics_say_how_to_create_them(cli: CliRunner, settings: Settings) -> None:
    result = cli(settings.with_overrides(offers_topic="no-such-topic-here"), "run", "--once")
    assert result.returncode == 2
    assert "jobpulse topics create" in one_error_line(result)


def test_more_workers_than_state_shards_is_refused(cli: CliRunner) -> None:
    from jobpulse.dataflows.open_offers import SHARDS

    result = cli(Settings(), "run", "--once", "--workers", str(SHARDS + 1))
    assert result.returncode == 2
    assert f"more than the {SHARDS} state shards" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [("--workers", "0"), ("--processes", "zero"), ("--snapshot-interval", "0")],
)
def test_bad_arguments_exit_2(cli: CliRunner, args: tuple[str, ...]) -> None:
    result = cli(Settings(), "run", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_unreadable_professions_file_is_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = cli(Settings(professions=missing), "run", "--once", "--processes", "2")
    assert result.returncode == 2
    assert "cannot read the professions file" in one_error_line(result)


@pytest.mark.integration
def test_verify_with_kafka_down_prints_only_the_error_line(
    cli: CliRunner, settings: Settings
) -> None:
    result = cli(settings.with_overrides(kafka_bootstrap="127.0.0.1:1"), "verify", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no librdkafka log lines around it
    assert lines[0].startswith("jobpulse: Kafka at 127.0.0.1:1 is not reachable")


@pytest.mark.integration
@pytest.mark.partitions(2)
def test_run_without_professions_warns_once(cli: CliRunner, settings: Settings) -> None:
    assert settings.professions is None
    result = cli(settings, "run", "--once", "--processes", "2")
    assert result.returncode == 0, result.stderr
    warning = (
        "JOBPULSE_PROFESSIONS is not set: offers with only a profession_id count as "
        "category Unknown"
    )
    assert result.stderr.count(warning) == 1, result.stderr  # the launcher, not each child


# -- a second Ctrl-C inside the dataflow: found in Bytewax's exception chain ------------------


def _flow(step: Any = None) -> Any:
    """One item through ``step``, or (no step) an idle source that never ends by itself."""
    from datetime import UTC, datetime, timedelta

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.testing import TestingSink, TestingSource

    class Idle(StatelessSourcePartition[int]):
        def next_batch(self) -> list[int]:
            return []

        def next_awake(self) -> datetime:
            return datetime.now(UTC) + timedelta(seconds=10)

    class IdleSource(DynamicSource[int]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Idle:
            return Idle()

    flow = Dataflow("interrupt_test")
    stream = op.input("in", flow, IdleSource() if step is None else TestingSource([1]))
    if step is not None:
        stream = op.map("step", stream, step)
    op.output("out", stream, TestingSink([]))
    return flow


def _failure_of(flow: Any, workers: int = 1) -> BaseException:
    from bytewax._bytewax import cli_main

    try:
        cli_main(flow, workers_per_process=workers)
    except BaseException as exc:  # what Bytewax raises is the subject
        return exc
    raise AssertionError("the dataflow ended without an exception")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_ctrl_c_is_found_in_what_bytewax_raises(workers: int) -> None:
    """The real path: _graceful_stop's handler raises KeyboardInterrupt on the second SIGINT
    while Bytewax runs (1 worker: in the main thread's worker, wrapped; 2: bare)."""
    from jobpulse import processes
    from jobpulse.dataflows.runner import _caused_by_interrupt, _graceful_stop

    def ctrl_c_twice() -> None:
        for _ in range(2):
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)

    was_requested = processes.STOP_REQUESTED.is_set()
    processes.STOP_REQUESTED.clear()
    sender = threading.Thread(target=ctrl_c_twice)
    try:
        with _graceful_stop(lambda: None, announce=False):
            sender.start()
            try:
                failure = _failure_of(_flow(), workers)
            finally:
                sender.join()  # both signals land while our handler is installed
    finally:
        if not was_requested:
            processes.STOP_REQUESTED.clear()
    assert _caused_by_interrupt(failure), repr(failure)
    if workers == 1:
        assert not isinstance(failure, KeyboardInterrupt)  # wrapped, found by the chain


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_an_exception_in_a_step_is_an_interrupt_only_if_it_is_one(
    error: type[BaseException],
) -> None:
    from jobpulse.dataflows.runner import _caused_by_interrupt, _root_cause

    def step(_item: int) -> int:
        raise error("KeyboardInterrupt is in this message either way")

    failure = _failure_of(_flow(step))
    assert isinstance(failure, RuntimeError)  # Bytewax's wrapper, whatever the step raised
    assert _caused_by_interrupt(failure) is (error is KeyboardInterrupt)
    assert _root_cause(failure) == "KeyboardInterrupt is in this message either way"


def test_interrupt_chains_are_walked_structurally() -> None:
    from jobpulse.dataflows.runner import _caused_by_interrupt

    def raised(outer: BaseException, inner: BaseException, *, cause: bool) -> BaseException:
        try:
            try:
                raise inner
            except BaseException:
                if cause:
                    raise outer from inner
                raise outer from None  # __context__ kept, __cause__ None
        except BaseException as exc:
            return exc
        raise AssertionError

    # C code that ran the handler: CPython's SystemError, caused by the interrupt.
    assert _caused_by_interrupt(
        raised(SystemError("returned a result"), KeyboardInterrupt(), cause=True)
    )
    # An interrupt only in the context of a cause chain without one is still found.
    mixed = raised(RuntimeError("outer"), ValueError("cause"), cause=True)
    mixed.__context__ = KeyboardInterrupt()
    assert _caused_by_interrupt(mixed)
    assert not _caused_by_interrupt(raised(RuntimeError("x"), ValueError("y"), cause=False))
    looped = RuntimeError("loop")
    looped.__cause__ = RuntimeError("back")
    looped.__cause__.__cause__ = looped
    assert not _caused_by_interrupt(looped)


def test_the_polling_thread_relaxes_its_timers_only_once_the_workers_run() -> None:
    from jobpulse import processes
    from jobpulse.dataflows.runner import POLLER_TIMER_SLACK_NS, RunOptions, _LazyPoller

    before = processes.timer_slack()
    assert before is not None and before != POLLER_TIMER_SLACK_NS
    poller = _LazyPoller(RunOptions(workers=2))  # cluster mode: Bytewax's calling thread polls
    seen_by_worker: list[int | None] = []

    def worker() -> None:
        poller.workers_run()
        poller.workers_run()  # once is enough: the second is not sent
        seen_by_worker.append(processes.timer_slack())

    with poller.around_bytewax():
        assert processes.timer_slack() == before  # the threads started now inherit this
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        time.sleep(0.05)  # the signal's handler runs here, on the calling (main) thread
        assert processes.timer_slack() == POLLER_TIMER_SLACK_NS
    assert seen_by_worker == [before]
    assert processes.timer_slack() == before

    single = _LazyPoller(RunOptions())  # one worker, one process: nothing polls
    with single.around_bytewax():
        single.workers_run()
        time.sleep(0.05)
        assert processes.timer_slack() == before


def test_a_process_knows_its_age_to_the_clock_tick() -> None:
    """The start-up line's "after the process started" (a benchmark reads it): exact to the
    kernel's 10 ms tick, where psutil's create_time() is off by the boot time's fraction."""
    import subprocess
    import sys

    began = time.monotonic()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(0.3); from jobpulse.processes import seconds_since_start; "
            "print(seconds_since_start(), time.monotonic())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    age, measured_at = (float(x) for x in child.stdout.split())
    upper = measured_at - began  # the child started after `began`
    assert 0.3 <= age <= upper + 0.011
    assert age >= upper - 0.1  # ... and within the fork's few milliseconds of it
