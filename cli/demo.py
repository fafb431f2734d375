"""``jobpulse demo``: the whole pipeline for a person to watch, and nothing left behind.

Brings the stack up (reusing what already runs), creates the topics, starts the dataflow
(``jobpulse run``, writing offer rows too), the PostgreSQL sink (``jobpulse sink``) and a
synthetic producer (``jobpulse produce --synthetic``) as child processes, and serves the
dashboard in this process. Ctrl-C (or SIGTERM, or a child dying)
stops the children, then the Kafka/Redis processes this demo started itself. Whatever kills
the demo (``kill -9``, or its output piped to ``tee`` and the pipe breaking on Ctrl-C), its
children get SIGTERM and stop cleanly (a parent-death signal), and a broken output never
stops the demo from stopping them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated

import typer

from jobpulse import processes
from jobpulse.settings import Settings, child_env

#: The offer-rows topic the demo's dataflow writes and its PostgreSQL sink reads, unless
#: JOBPULSE_ROWS_TOPIC names another.
DEMO_ROWS_TOPIC = "jobpulse.offer-rows"

#: Seconds a child gets to stop after SIGINT (the dataflow snapshots, the producer flushes).
STOP_GRACE_S = 15.0


@dataclass
class Child:
    """A background ``jobpulse`` command with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @classmethod
    def start(cls, name: str, settings: Settings, command: Sequence[str], log_dir: Path) -> Child:
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        process = processes.spawn_jobpulse(
            command,
            env=child_env(settings),
            output=log_file,
            new_session=True,  # our Ctrl-C handling decides when it stops
        )
        return cls(name, process, log_path, log_file)

    def exited(self) -> int | None:
        return self.process.poll()

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    def stop(self) -> int | None:
        """SIGINT, wait up to :data:`STOP_GRACE_S`, then SIGKILL; then its whole group."""
        code = processes.stop_child(self.process, signal.SIGINT, STOP_GRACE_S)
        # Bytewax may leave worker processes in the group: make sure none survives.
        processes.signal_group(self.process.pid, signal.SIGKILL)
        self.log_file.close()
        return code


def _say(text: str, **style: object) -> None:
    """Print for the person watching; a closed output (the pipe to ``tee`` broke on Ctrl-C)
    must not keep the demo from stopping what it started."""
    with contextlib.suppress(OSError, ValueError):
        typer.secho(text, **style)  # type: ignore[arg-type]


def run(settings: Settings, *, rate: float, show: bool) -> int:
    """Run the demo until Ctrl-C; return the exit code."""
    from jobpulse import topics
    from jobpulse.dashboard import server
    from jobpulse.stack import lifecycle

    states, seconds = lifecycle.up(settings)
    started = [s.name for s in states if s.state == lifecycle.STARTED]
    _say(f"stack: {', '.join(f'{s.name} {s.state}' for s in states)} ({seconds:.1f}s)")
    children: list[Child] = []
    failure: list[str] = []
    try:
        outcomes = topics.ensure_topics(settings)
        _say("topics: " + ", ".join(f"{n} {o}" for n, o in outcomes.items()))
        log_dir = Path(settings.state_dir) / "demo"
        log_dir.mkdir(parents=True, exist_ok=True)
        children.append(Child.start("dataflow", settings, ["run"], log_dir))
        children.append(Child.start("postgres-sink", settings, ["sink"], log_dir))
        children.append(
            Child.start(
                "producer", settings, ["produce", "--synthetic", f"--rate={rate:g}"], log_dir
            )
        )
        _say(
            f"dataflow pid {children[0].process.pid}, PostgreSQL sink pid "
            f"{children[1].process.pid}, producer pid {children[2].process.pid} "
            f"({rate:g} offers/s); logs in {log_dir}"
        )

        def child_failed() -> bool:
            for child in children:
                code = child.exited()
                if code is not None:
                    failure.append(
                        f"{child.name} exited with code {code}; last lines of "
                        f"{child.log_path}:\n{child.tail()}"
                    )
                    return True
            return False

        def ready(url: str) -> None:
            _say(f"\n  jobpulse dashboard: {url}\n", bold=True)
            _say("  Ctrl-C stops the dashboard, the producer and the dataflow.\n")

        server.serve(settings, show=show, on_ready=ready, stop_when=child_failed)
    finally:
        t0 = time.monotonic()
        for child in reversed(children):  # producer first, then the sink and the dataflow
            code = child.stop()
            _say(f"stopped {child.name} (exit code {code})")
        if started:
            for state in lifecycle.down(settings, only=started):
                _say(f"stopped {state.name}")
        _say(f"demo stopped in {time.monotonic() - t0:.1f}s; nothing left running")
    if failure:
        _say(f"jobpulse demo: {failure[0]}", err=True, fg="red")
        return 1
    return 0


def demo(
    ctx: typer.Context,
    rate: Annotated[
        float, typer.Option(help="Synthetic offers per second.", min=0.1, max=100_000)
    ] = 20.0,
    port: Annotated[
        int | None, typer.Option(help="Dashboard port (env JOBPULSE_DASHBOARD_PORT).", min=0)
    ] = None,
    show: Annotated[bool, typer.Option("--show/--no-show", help="Open a browser tab.")] = False,
) -> None:
    """The whole pipeline to watch: stack, topics, dataflow, synthetic producer, dashboard.

    Starts (or reuses) Kafka and Redis, creates the topics, runs `jobpulse run` and
    `jobpulse produce --synthetic` in the background and serves the dashboard. Ctrl-C stops
    everything it started.
    """
    settings: Settings = ctx.obj.with_overrides(
        dashboard_port=port, rows_topic=ctx.obj.rows_topic or DEMO_ROWS_TOPIC
    )
    raise typer.Exit(run(settings, rate=rate, show=show))
