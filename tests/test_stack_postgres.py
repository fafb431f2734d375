"""PostgreSQL in the local stack: real ``initdb``/``postgres`` processes and the real CLI.

Each test runs its own PostgreSQL (a free port, a private state dir) next to the shared Kafka
and Redis, which it reuses (``external``). Passwords planted in URLs must never be printed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import psutil
import pytest
from conftest import free_port

from jobpulse import pg
from jobpulse.errors import AuthenticationFailed, ServiceUnavailable, UsageError
from jobpulse.settings import Settings
from jobpulse.stack import postgres

if TYPE_CHECKING:
    from conftest import CliRunner

pytestmark = pytest.mark.integration

PASSWORD = "pg-pass-4711"
#: A wrong password planted in a URL: it must never be printed.
PLANTED = "s3cr3t-planted-PG"
ROOT = os.geteuid() == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A temporary folder other users can enter: run as root, PostgreSQL runs as the
    ``postgres`` user, which cannot reach into pytest's own (mode 0700) temporary folders."""
    folder = Path(tempfile.mkdtemp(prefix="jobpulse-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private(stack: Settings, open_dir: Path, cli: CliRunner) -> Iterator[Settings]:
    """The shared Kafka and Redis, and a PostgreSQL of its own to start (free port, own state
    dir, user ``jobpulse`` with a password); stopped at teardown if still running."""
    settings = stack.with_overrides(
        postgres_url=f"postgresql://jobpulse:{PASSWORD}@localhost:{free_port()}/jobpulse",
        state_dir=open_dir / "state",
    )
    yield settings
    cli(settings, "stack", "down")


def line_of(output: str) -> str:
    """The ``postgres`` line of a stack command's output."""
    lines = [line for line in output.splitlines() if line.split()[:1] == ["postgres"]]
    assert len(lines) == 1, output
    return lines[0]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("jobpulse:")]


def pid_of(settings: Settings) -> int:
    return int(orjson.loads(postgres.Paths(settings).pid.read_bytes())["pid"])


def masked(settings: Settings) -> str:
    return pg.display(settings)


def test_up_starts_postgres_reuses_it_and_down_stops_it(
    private: Settings, open_dir: Path, cli: CliRunner
) -> None:
    first = cli(private, "stack", "up")
    assert first.returncode == 0, first.stderr
    line = line_of(first.stdout)
    assert " started " in line and masked(private) in line and " pid " in line
    assert PASSWORD not in first.stdout + first.stderr
    pid = pid_of(private)
    port = pg.target(private).port
    server = psutil.Process(pid)
    # Listening on 127.0.0.1 only, no Unix socket; run by the postgres user when we are root.
    listening = {c.laddr for c in server.net_connections("tcp") if c.status == "LISTEN"}
    assert {(ip, p) for ip, p in listening} == {("127.0.0.1", port)}
    assert not server.net_connections("unix")
    paths = postgres.Paths(private)
    assert (paths.data / "PG_VERSION").is_file() and paths.log.is_file()
    assert stat.S_IMODE(paths.data.stat().st_mode) == 0o700
    if ROOT:
        assert server.username() == "postgres"
        assert paths.data.owner() == "postgres"

    # The URL's user and database exist, and a query works.
    with pg.connect(private) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "jobpulse",
            "jobpulse",
        )
        conn.execute("CREATE TABLE offers (id text PRIMARY KEY)")
        conn.execute("INSERT INTO offers VALUES ('o-1')")
    version = pg.server_version(private)
    assert (
        version is not None
        and version.split(".")[0] == paths.data.joinpath("PG_VERSION").read_text().strip()
    )
    assert f"postgres {version}" in first.stdout

    second = cli(private, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert " already running " in line_of(second.stdout) and "stack already running" in (
        second.stdout
    )
    assert pid_of(private) == pid
    status = cli(private, "stack", "status")
    assert status.returncode == 0, status.stderr
    line = line_of(status.stdout)
    assert " already running " in line and f"pid {pid}" in line and version in line
    assert masked(private) in line and PASSWORD not in status.stdout + status.stderr

    # Another state dir reuses it as external, and its `down` leaves it running.
    other = private.with_overrides(state_dir=open_dir / "other-state")
    reused = cli(other, "stack", "up")
    assert reused.returncode == 0, reused.stderr
    assert " external " in line_of(reused.stdout) and "pid" not in line_of(reused.stdout)
    left = cli(other, "stack", "down")
    assert "left running" in line_of(left.stdout)
    assert server.is_running() and pg.server_version(private) == version

    down = cli(private, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert " stopped " in line_of(down.stdout) and f"pid {pid}" in line_of(down.stdout)
    assert not psutil.pid_exists(pid) or server.status() == psutil.STATUS_ZOMBIE
    assert not paths.pid.exists()
    assert "fast shutdown" in paths.log.read_text()
    after = cli(private, "stack", "status")
    assert after.returncode == 3 and " down " in line_of(after.stdout)

    # Started again on the same data dir: no initdb, the rows are still there.
    again = cli(private, "stack", "up")
    assert again.returncode == 0, again.stderr
    assert " started " in line_of(again.stdout)
    with pg.connect(private) as conn:
        assert conn.execute("SELECT id FROM offers").fetchall() == [("o-1",)]


def test_a_running_postgres_of_ours_follows_the_url(private: Settings, cli: CliRunner) -> None:
    """No password: trusted on 127.0.0.1. Then another user, database and password on the
    same server: ``up`` creates them and requires the password; a wrong one is refused."""
    port = pg.target(private).port
    trusted = private.with_overrides(
        postgres_url=f"postgresql://jobpulse@localhost:{port}/jobpulse"
    )
    up = cli(trusted, "stack", "up")
    assert up.returncode == 0, up.stderr
    assert " started " in line_of(up.stdout)
    with pg.connect(trusted) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("jobpulse",)
    hba = postgres.Paths(private).hba.read_text()
    assert "127.0.0.1/32   trust" in hba and "0.0.0.0" not in hba and "local" not in hba

    secured = private.with_overrides(
        postgres_url=f"postgresql://sink:{PASSWORD}@localhost:{port}/offers_db"
    )
    again = cli(secured, "stack", "up")
    assert again.returncode == 0, again.stderr
    assert " already running " in line_of(again.stdout)
    with pg.connect(secured) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "sink",
            "offers_db",
        )
        conn.execute("CREATE TABLE t (x int)")  # the user owns its database

    wrong = secured.with_overrides(
        postgres_url=f"postgresql://sink:{PLANTED}@localhost:{port}/offers_db"
    )
    status = cli(wrong, "stack", "status")
    assert status.returncode == 3
    assert " auth failed " in line_of(status.stdout)
    (error,) = error_lines(status.stderr)
    assert f"PostgreSQL authentication failed for user 'sink' at localhost:{port}" in error
    assert masked(wrong) in error
    assert PLANTED not in status.stdout + status.stderr
    with pytest.raises(AuthenticationFailed) as refused:
        pg.connect(wrong)
    assert PLANTED not in str(refused.value) and "***" in str(refused.value)
    # Without a password the user is no longer let in.
    with pytest.raises(AuthenticationFailed, match="requires a password"):
        pg.connect(
            wrong.with_overrides(postgres_url=f"postgresql://sink@localhost:{port}/offers_db")
        )


def test_a_remote_postgres_that_is_down_is_one_line(stack: Settings, cli: CliRunner) -> None:
    remote = stack.with_overrides(postgres_url=f"postgresql://jobpulse:{PLANTED}@192.0.2.1:5432/db")
    started = time.monotonic()
    up = cli(remote, "stack", "up", timeout=60)
    assert up.returncode == 1
    assert time.monotonic() - started < 20
    (error,) = error_lines(up.stderr)
    assert f"postgres at {masked(remote)} is not reachable" in error
    assert "only starts services on this machine" in error
    status = cli(remote, "stack", "status", timeout=60)
    assert status.returncode == 3 and " down " in line_of(status.stdout)
    assert PLANTED not in up.stdout + up.stderr + status.stdout + status.stderr


@pytest.mark.skipif(not ROOT, reason="only root runs PostgreSQL as another user")
def test_a_state_dir_the_postgres_user_cannot_enter_keeps_the_data_outside_it(
    stack: Settings, tmp_path: Path, cli: CliRunner
) -> None:
    """A checkout under /root (mode 0700): the server's user cannot enter the state dir, so
    the data goes to a folder of its own under /var/tmp, and everything still works."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    settings = stack.with_overrides(
        postgres_url=f"postgresql://jobpulse@localhost:{free_port()}/jobpulse",
        state_dir=closed / "state",
    )
    paths = postgres.Paths(settings)
    assert paths.data.parent == postgres.OUTSIDE_STATE_DIR
    try:
        up = cli(settings, "stack", "up", timeout=120)
        assert up.returncode == 0, up.stderr
        with pg.connect(settings, autocommit=True) as conn:
            assert conn.execute("select 41 + 1").fetchone() == (42,)
        assert paths.pid.exists() and (paths.data / "PG_VERSION").exists()
    finally:
        cli(settings, "stack", "down", timeout=120)
        shutil.rmtree(paths.data, ignore_errors=True)
    assert not paths.pid.exists()


def test_connection_errors_are_one_masked_line(stack: Settings) -> None:
    """No server needed: nothing listens on the port, or the URL is malformed."""
    nowhere = stack.with_overrides(
        postgres_url=f"postgresql://jobpulse:{PLANTED}@localhost:{free_port()}/jobpulse"
    )
    with pytest.raises(ServiceUnavailable) as down:
        pg.connect(nowhere)
    assert not isinstance(down.value, AuthenticationFailed)
    assert "PostgreSQL is not reachable at" in str(down.value) and "\n" not in str(down.value)
    assert PLANTED not in str(down.value)
    assert pg.server_version(nowhere) is None
    key_value = stack.with_overrides(
        postgres_url=f"host=localhost port={free_port()} user=jobpulse password={PLANTED}"
    )
    with pytest.raises(ServiceUnavailable) as down:
        pg.connect(key_value)
    assert "password=***" in str(down.value) and PLANTED not in str(down.value)
    for url in (
        f"postgresql://jobpulse:{PLANTED}@localhost:x/db",
        f"postgresql://jobpulse:{PLANTED}@localhost:5432/db?bogus=1",
        f"host=localhost password={PLANTED} dbname",
    ):
        with pytest.raises(UsageError) as bad:
            pg.connect(stack.with_overrides(postgres_url=url))
        assert "JOBPULSE_POSTGRES_URL" in str(bad.value) and PLANTED not in str(bad.value)
