"""PostgreSQL from Debian's ``postgresql`` package, with its cluster under the state dir.

- Binaries: the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps ``initdb``,
  ``pg_ctl`` and ``postgres`` there, off PATH), the cluster's own version if it is installed,
  else ``initdb`` found on PATH.
- First start: ``initdb`` into ``<state dir>/postgres`` (UTF-8, C locale) with an admin
  superuser, ``jobpulse_admin``, whose random password stays in the data dir (mode 0600).
- Every start: ``pg_hba.conf`` is generated, then ``postgres`` runs on the port of
  ``JOBPULSE_POSTGRES_URL``, listening on 127.0.0.1 only and on no Unix socket, logging to
  ``<state dir>/logs/postgres.log``. Once it accepts connections, the admin creates the URL's
  role (password set from the URL, or none) and database (owned by that role).
- Authentication, TCP from 127.0.0.1 only: the admin always by password (SCRAM); the URL's user
  by password (SCRAM) when the URL gives one, else ``trust``.
- Stop: ``pg_ctl stop -m fast`` (open sessions are rolled back and closed, no waiting for
  clients to leave).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobpulse import pg, processes
from jobpulse.errors import AuthenticationFailed, JobpulseError, ServiceUnavailable
from jobpulse.processes import PidRecord
from jobpulse.settings import Settings

READY_TIMEOUT_S = 60.0
#: The cluster's own superuser, used only by ``jobpulse stack up`` to create the URL's role.
ADMIN = "jobpulse_admin"
#: Where Debian installs each major version's server binaries.
DEBIAN_LIB = Path("/usr/lib/postgresql")
#: The system user that runs the server when jobpulse runs as root (Debian's package makes it).
SYSTEM_USER = "postgres"
FIX = "run `make deps` or apt-get install postgresql"
#: The only address the server listens on.
LOOPBACK = "127.0.0.1"


class Paths:
    """Where PostgreSQL keeps its files under the state dir."""

    def __init__(self, settings: Settings) -> None:
        state = settings.state_dir.resolve()
        self.state = state
        self.data = _data_dir(state)
        self.hba = self.data / "pg_hba.conf"
        self.admin_password = self.data / "jobpulse-admin.password"
        self.log = state / "logs" / "postgres.log"
        self.pid = state / "run" / "postgres.pid"


# -- binaries and the user that runs them ---------------------------------------------------
def _version_key(name: str) -> tuple[int, ...] | None:
    parts = name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def bin_dir(data: Path | None = None) -> Path | None:
    """Folder of ``initdb``, ``postgres`` and ``pg_ctl``: the Debian version that made the
    cluster in ``data`` if installed, else the newest Debian version, else ``initdb`` on PATH
    (resolved, so that its siblings are found); ``None`` when PostgreSQL is not installed."""
    installed: dict[tuple[int, ...], Path] = {}
    for initdb in DEBIAN_LIB.glob("*/bin/initdb"):
        key = _version_key(initdb.parent.parent.name)
        if key is not None:
            installed[key] = initdb.parent
    with contextlib.suppress(OSError):
        made_by = _version_key((data / "PG_VERSION").read_text().strip()) if data else None
        if made_by in installed:
            return installed[made_by]
    if installed:
        return installed[max(installed)]
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass(frozen=True)
class RunAs:
    """Who runs ``initdb``, ``postgres`` and ``pg_ctl``, and how."""

    name: str
    #: Put before a command to run it as :attr:`name` (empty: the current user).
    prefix: tuple[str, ...] = ()
    #: Owner to give the files jobpulse writes into the data dir (``None``: leave as is).
    uid: int | None = None
    gid: int | None = None


def run_as() -> RunAs:
    """The current user, or — when jobpulse runs as root — the ``postgres`` system user.

    ``initdb``, ``postgres`` and ``pg_ctl`` refuse to run as root (a server bug or an SQL
    injection must not own the machine). As root, jobpulse runs them as Debian's ``postgres``
    system user through ``setpriv``, which changes the user and group ids (and the
    supplementary groups) and then *execs* the command: the pid jobpulse records is the
    server's own (``runuser``/``su`` would stay in between as a parent). The data dir is
    owned by ``postgres`` and mode 0700, as PostgreSQL requires.
    """
    if os.geteuid() != 0:
        return RunAs(getpass.getuser())
    try:
        user = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise JobpulseError(
            f"PostgreSQL refuses to run as root and there is no {SYSTEM_USER!r} system user "
            f"to run it as: {FIX} (it creates the user), or run jobpulse as another user"
        ) from None
    setpriv = shutil.which("setpriv") or next(
        (p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None
    )
    if setpriv is None:
        raise JobpulseError("setpriv not found: apt-get install util-linux")
    prefix = (setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--")
    return RunAs(SYSTEM_USER, prefix, user.pw_uid, user.pw_gid)


def _blocked(who: RunAs, folder: Path) -> bool:
    """Whether ``who`` cannot enter ``folder`` (its nearest existing ancestor: jobpulse
    creates the rest, open to all)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    test = shutil.which("test") or "/usr/bin/test"
    probe = subprocess.run([*who.prefix, test, "-x", str(folder)], check=False)
    return probe.returncode != 0


def _closed_ancestor(who: RunAs, folder: Path) -> Path:
    """The first folder on the way to ``folder`` that ``who`` cannot enter (best effort)."""
    for parent in [*reversed(folder.parents), folder]:
        if parent.exists() and _blocked(who, parent):
            return parent
    return folder


#: Where the data goes when the server's user cannot enter the state dir (see _data_dir).
OUTSIDE_STATE_DIR = Path("/var/tmp/jobpulse-postgres")


@functools.lru_cache(maxsize=16)
def _data_dir(state: Path) -> Path:
    """``<state dir>/postgres``; as root, when the ``postgres`` user cannot enter the state
    dir (a checkout under ``/root``, mode 0700), a folder of its own in
    :data:`OUTSIDE_STATE_DIR` named after the state dir, so ``stack up`` works wherever the
    project was cloned. ``stack status`` shows where the data is."""
    inside = state / "postgres"
    try:
        who = run_as()
    except JobpulseError:
        return inside
    if not who.prefix or not _blocked(who, state):
        return inside
    OUTSIDE_STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    return OUTSIDE_STATE_DIR / hashlib.sha256(str(state).encode()).hexdigest()[:16]


# -- what `stack up` checks before starting anything ----------------------------------------
def problems(settings: Settings) -> list[str]:
    """What keeps ``stack up`` from starting PostgreSQL for these settings (one line each)."""
    found: list[str] = []
    if bin_dir(Paths(settings).data) is None:
        found.append(f"initdb not found: {FIX}")
    where = pg.target(settings)
    shown = pg.display(settings)
    if not where.tcp or where.host not in {"localhost", LOOPBACK}:
        found.append(
            f"PostgreSQL at {shown} is not running, and jobpulse starts PostgreSQL on "
            f"{LOOPBACK} only: point JOBPULSE_POSTGRES_URL at "
            "postgresql://user@localhost:<port>/database"
        )
    if where.user == ADMIN:
        found.append(
            f"JOBPULSE_POSTGRES_URL ({shown}) uses {ADMIN!r}, the local server's own admin: "
            "choose another user"
        )
    try:
        who = run_as()
    except JobpulseError as exc:
        return [*found, str(exc)]
    paths = Paths(settings)
    if who.prefix and _blocked(who, paths.data.parent):
        closed = _closed_ancestor(who, paths.data.parent)
        found.append(
            f"PostgreSQL runs as the {who.name!r} system user (it refuses root), which cannot "
            f"enter {closed}, so it cannot use {paths.data}: set JOBPULSE_STATE_DIR to "
            f"a folder other users can enter (e.g. under /var/tmp), or `chmod o+x {closed}`"
        )
    return found


# -- start, prepare, stop -------------------------------------------------------------------
def command(settings: Settings, bins: Path, who: RunAs, paths: Paths) -> list[str]:
    """The ``postgres`` command line (settings as ``-c`` arguments over initdb's file)."""
    return [
        *who.prefix,
        str(bins / "postgres"),
        "-D",
        str(paths.data),
        "-p",
        str(pg.target(settings).port),
        "-c",
        f"listen_addresses={LOOPBACK}",
        # No Unix socket: nothing to collide with a system cluster's /var/run/postgresql,
        # and no path-length limit for deep state dirs.
        "-c",
        "unix_socket_directories=",
        "-c",
        "cluster_name=jobpulse",
    ]


def start(settings: Settings) -> PidRecord:
    """``initdb`` on first start, then launch ``postgres`` in the background, wait until it
    accepts connections and create the URL's role and database (:func:`prepare`)."""
    found = problems(settings)
    if found:
        raise JobpulseError("; ".join(found))
    paths, who = Paths(settings), run_as()
    bins = bin_dir(paths.data)
    assert bins is not None  # problems() said so
    port = pg.target(settings).port
    if processes.port_open(LOOPBACK, port):
        raise JobpulseError(
            f"port {port} is taken by a process that is not PostgreSQL for "
            f"{pg.display(settings)}: stop it, or point JOBPULSE_POSTGRES_URL "
            "at a free port"
        )
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    if not (paths.data / "PG_VERSION").is_file():
        _initdb(bins, who, paths)
    write_hba(settings, who)
    record = processes.start_detached(command(settings, bins, who, paths), paths.log, paths.pid)
    try:
        processes.wait_until(
            lambda: _admin_answers(settings),
            timeout=READY_TIMEOUT_S,
            what=f"postgres at {pg.display(settings)}",
            failed=lambda: exit_reason(settings, record),
        )
        prepare(settings)
    except BaseException:
        stop(settings, record)
        paths.pid.unlink(missing_ok=True)
        raise
    return record


def _initdb(bins: Path, who: RunAs, paths: Paths) -> None:
    """A new cluster in ``paths.data``, owned by ``who``, with the admin's password set."""
    if paths.data.exists() and any(paths.data.iterdir()):
        raise JobpulseError(
            f"{paths.data} holds files but no PostgreSQL cluster (no PG_VERSION): "
            "move it away or delete it, then run `jobpulse stack up` again"
        )
    paths.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.data.chmod(0o700)
    _own(paths.data, who)
    password = secrets.token_urlsafe(24)
    # initdb wants an empty data dir, so the password file waits next to it meanwhile.
    pwfile = paths.data.parent / f".postgres-admin-{os.getpid()}"
    _write_private(pwfile, password + "\n", who)
    try:
        result = subprocess.run(
            [
                *who.prefix,
                str(bins / "initdb"),
                "-D",
                str(paths.data),
                "-U",
                ADMIN,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            cwd=paths.data,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(paths.data, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise JobpulseError(f"initdb into {paths.data} failed: " + " | ".join(output))
    _write_private(paths.admin_password, password, who)


def hba(settings: Settings) -> str:
    """``pg_hba.conf``: TCP from 127.0.0.1 only; the admin by password; the URL's user by
    password if the URL gives one, else trusted."""
    method = "scram-sha-256" if pg.target(settings).password is not None else "trust"
    return (
        "# Generated by jobpulse stack up on every start; edits are overwritten.\n"
        "# TYPE  DATABASE  USER            ADDRESS        METHOD\n"
        f"host    all       {ADMIN:<15} {LOOPBACK}/32   scram-sha-256\n"
        f"host    all       all             {LOOPBACK}/32   {method}\n"
    )


def write_hba(settings: Settings, who: RunAs) -> bool:
    """Write ``pg_hba.conf`` for these settings; whether it changed."""
    path = Paths(settings).hba
    text = hba(settings)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    _write_private(path, text, who)
    return True


def prepare(settings: Settings) -> None:
    """Make ``JOBPULSE_POSTGRES_URL`` work on the PostgreSQL this state dir runs: its
    ``pg_hba.conf`` (reloaded if it changed), its role (created, its password set to the
    URL's or removed) and its database (created, owned by the role). Idempotent."""
    where = pg.target(settings)
    if where.user == ADMIN:
        raise JobpulseError(
            f"JOBPULSE_POSTGRES_URL ({pg.display(settings)}) uses {ADMIN!r}, the local "
            "server's own admin: choose another user"
        )
    with _admin(settings) as conn:
        # Written once the server answers, so that the reload below reaches it.
        changed = write_hba(settings, run_as())
        if changed:
            conn.execute("SELECT pg_reload_conf()")
        role = sql.Identifier(where.user)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (where.user,))
        verb = sql.SQL("ALTER" if exists.fetchone() else "CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
                verb, role, sql.Literal(where.password)
            )
        )
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (where.dbname,)
        ).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(where.dbname), role)
            )
    if changed:
        # The postmaster reloads pg_hba.conf asynchronously: wait until the URL is let in.
        with contextlib.suppress(ServiceUnavailable):
            processes.wait_until(
                lambda: _url_answers(settings), timeout=5.0, what="the reloaded pg_hba.conf"
            )


def _url_answers(settings: Settings) -> bool:
    with contextlib.suppress(AuthenticationFailed):
        return pg.server_version(settings) is not None
    return False


def _admin_settings(settings: Settings) -> Settings:
    """Settings whose URL is the admin's (the password comes from the data dir)."""
    paths = Paths(settings)
    try:
        password = paths.admin_password.read_text().strip()
    except OSError as exc:
        raise JobpulseError(
            f"cannot read the local PostgreSQL admin's password ({exc.strerror}: "
            f"{paths.admin_password}): stop it with `jobpulse stack down` and move "
            f"{paths.data} away to start over"
        ) from None
    url = f"postgresql://{ADMIN}:{password}@{LOOPBACK}:{pg.target(settings).port}/postgres"
    return settings.with_overrides(postgres_url=url)


def _admin_answers(settings: Settings) -> bool:
    """Whether the server accepts the admin (``False`` while it starts up)."""
    try:
        with _admin(settings):
            return True
    except AuthenticationFailed:
        raise
    except ServiceUnavailable:
        return False


@contextlib.contextmanager
def _admin(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection as the admin, through :func:`jobpulse.pg.connect`."""
    admin = _admin_settings(settings)
    try:
        conn = pg.connect(admin, autocommit=True)
    except AuthenticationFailed as exc:
        raise AuthenticationFailed(
            f"the local PostgreSQL in {Paths(settings).data} refused its own admin ({exc}): "
            f"stop it with `jobpulse stack down` and move {Paths(settings).data} away "
            "to start over"
        ) from None
    try:
        yield conn
    except psycopg.Error as exc:
        raise JobpulseError(
            f"setting up {pg.display(settings)} on the local PostgreSQL "
            f"failed: {settings.scrub(' '.join(str(exc).split()))}"
        ) from None
    finally:
        conn.close()


def stop(settings: Settings, record: PidRecord) -> None:
    """Fast shutdown (``pg_ctl stop -m fast``: sessions are ended, nothing waits for
    clients), then make sure the process is gone (SIGTERM/SIGKILL) and reaped."""
    paths = Paths(settings)
    bins = bin_dir(paths.data)
    if bins is not None and record.process() is not None and _postmaster_pid(paths) == record.pid:
        with contextlib.suppress(JobpulseError, OSError, subprocess.SubprocessError):
            pg_ctl = [str(bins / "pg_ctl"), "stop", "-D", str(paths.data), "-m", "fast", "-w"]
            subprocess.run(
                [*run_as().prefix, *pg_ctl, "-t", "60"],
                capture_output=True,
                check=False,
                timeout=90,
            )
    processes.stop(record)


def _postmaster_pid(paths: Paths) -> int | None:
    """The pid in the cluster's ``postmaster.pid`` (the server running on it)."""
    try:
        return int((paths.data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def exit_reason(settings: Settings, record: PidRecord) -> str | None:
    """Why a PostgreSQL we just started is gone (``None`` while it runs)."""
    code = processes.exited_early(record)
    if code is None:
        return None
    log = Paths(settings).log
    return f"postgres exited (code {code}); see {log}:\n" + processes.tail(log, 10)


# -- files ----------------------------------------------------------------------------------
def _own(path: Path, who: RunAs) -> None:
    if who.uid is not None and who.gid is not None:
        os.chown(path, who.uid, who.gid)


def _write_private(path: Path, text: str, who: RunAs) -> None:
    """Write ``text`` to ``path``, readable by its owner only, owned by ``who``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    _own(tmp, who)
    tmp.replace(path)
