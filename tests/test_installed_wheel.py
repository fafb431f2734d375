"""jobpulse as the image runs it: installed from a wheel into a clean virtualenv, started
from a working directory that holds a copy of the source tree (as the old image's
``WORKDIR /app`` did). ``run --processes 2 --once`` and ``demo`` must work there: children
started as ``python -m jobpulse`` imported the ``jobpulse/`` source folder instead of the
installed package (``No module named 'jobpulse.cli'``) until ``jobpulse/processes.py`` passed
``-P``.

Fast on purpose: the wheel is built without dependencies, installed with ``--no-deps`` into
a venv that has no pip of its own (the project's pip installs into it), and the project
venv's site-packages — the dependencies, already installed — is made visible through a
``.pth`` file. A directory named in a ``.pth`` is appended to ``sys.path`` but its own
``.pth`` files are not run, so the project's editable install of jobpulse stays inactive:
``import jobpulse`` finds the wheel's copy in the clean venv's site-packages, first.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import orjson
import pytest
from conftest import REPO, free_port
from test_dashboard_browser import http_get

from jobpulse.settings import Settings, child_env

pytestmark = pytest.mark.integration

#: What a copy of the source tree needs (and what the image's build context holds).
SOURCES = ["pyproject.toml", "README.md", "jobpulse", "stack", "producer", "dataflows",
           "dashboard", "postgres", "cli"]  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the clean venv's ``jobpulse`` script, a working directory holding the sources)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Built from the copy, so the repository gets no build/ or egg-info.
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(root / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("jobpulse-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [str(python), "-c", "import jobpulse.dashboard as d; print(d.__file__)"],
        capture_output=True, text=True, check=True, cwd=root,
    ).stdout  # fmt: skip
    assert where.startswith(site), where  # the wheel's copy, not the repository's
    return venv / "bin" / "jobpulse", source


def test_run_with_two_processes_from_a_source_tree(
    installed: tuple[Path, Path], settings: Settings
) -> None:
    jobpulse, source = installed
    result = subprocess.run(
        [str(jobpulse), "run", "--processes", "2", "--once"],
        env=child_env(settings), cwd=source, capture_output=True, text=True, timeout=300,
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ModuleNotFoundError" not in result.stderr


@pytest.mark.partitions(3)  # the rows topic sink_settings makes has 3
def test_demo_from_a_source_tree(installed: tuple[Path, Path], sink_settings: Settings) -> None:
    """The demo's children (dataflow, sink, producer) are ``python -m jobpulse`` processes:
    offers reach the dashboard's API only if they all start from the installed package."""
    jobpulse, source = installed
    port = free_port()
    demo = subprocess.Popen(
        [str(jobpulse), "demo", "--port", str(port), "--rate", "50"],
        env=child_env(sink_settings), cwd=source, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    total = 0
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "jobpulse dashboard: http" in line:
                break
        deadline = time.monotonic() + 90
        while total == 0 and time.monotonic() < deadline and demo.poll() is None:
            status, body = http_get(f"http://127.0.0.1:{port}/api/breakdown")
            total = orjson.loads(body).get("total", 0) if status == 200 else 0
            time.sleep(1)
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=90)
    output = "".join(lines) + rest
    assert total > 0, output
    assert demo.returncode == 0, output
    assert not re.search(r"ModuleNotFoundError|exited with code", output), output
