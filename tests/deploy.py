"""Helpers of the deployment tests: the pinned checkers `make tools` caches, and the
Kubernetes overlays rendered by that kustomize (tests/test_deployment.py,
tests/test_deploy_checks.py, tests/test_pod_entrypoint.py).

The checkers are never looked for on PATH: the tests run exactly the versions the Makefile
pins, from ``~/.cache/jobpulse/tools/bin`` (``$XDG_CACHE_HOME`` honoured, the same folder
rule as the Kafka jars). A missing one fails the test with the fix — never a skip.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobpulse.cache import cache_root

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
TOOLS = cache_root() / "tools" / "bin"


def tool(name: str) -> str:
    """The path of checker ``name`` as ``make tools`` installed it, or the test fails."""
    path = TOOLS / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not in {TOOLS}: run `make tools` (make test does)", pytrace=False)
    return str(path)


def pinned_versions() -> dict[str, str]:
    """``{tool: version}`` as the Makefile pins them (``KUSTOMIZE_VERSION := v5.8.1`` …)."""
    text = (REPO / "Makefile").read_text()
    found = dict(re.findall(r"^([A-Z_]+)_VERSION := (\S+)$", text, re.MULTILINE))
    return {name.lower().replace("_", "-"): version for name, version in found.items()}


def run_tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a checker (offline, bounded) and return what it said."""
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def kustomize_build(directory: Path) -> str:
    """``kustomize build directory``, or the test fails with kustomize's message."""
    result = run_tool(tool("kustomize"), "build", str(directory))
    if result.returncode != 0:
        pytest.fail(f"kustomize build {directory} failed: {result.stderr}", pytrace=False)
    return result.stdout


@functools.cache
def rendered(overlay: str) -> str:
    """The YAML of overlay ``overlay`` (rendered once per test session)."""
    return kustomize_build(K8S / "overlays" / overlay)


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML text."""
    return [d for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    """The one object of ``kind`` whose name starts with ``name_prefix`` (generated
    ConfigMaps carry a hash suffix)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{kind}/{name_prefix}*: {len(found)} found"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and StatefulSet."""
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet"}
    ]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a pod spec, init containers included."""
    return [*spec.get("initContainers", []), *spec["containers"]]
