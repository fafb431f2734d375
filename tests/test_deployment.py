"""The Kubernetes manifests agree with the code: settings, commands and scaling limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from jobpulse import settings as settings_module
from jobpulse.cli.main import app

K8S = Path(__file__).resolve().parents[1] / "k8s"


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


def _one(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def _containers() -> list[dict[str, Any]]:
    containers = []
    for doc in _documents():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        containers += spec.get("containers", [])
    return containers


def test_configmap_holds_only_real_settings_and_loads() -> None:
    data = _one("ConfigMap", "jobpulse-settings")["data"]
    known = {settings_module.env_var(name) for name in settings_module.Settings.model_fields}
    assert set(data) <= known, set(data) - known
    loaded = settings_module.load(env=data)
    assert loaded.partitions == int(data["JOBPULSE_PARTITIONS"])
    assert loaded.kafka_bootstrap == data["JOBPULSE_KAFKA_BOOTSTRAP"]


def test_no_secret_values_in_the_manifests() -> None:
    for doc in _documents():
        assert doc["kind"] != "Secret", "secrets are created by the operator, never committed"
    for container in _containers():
        for env in container.get("env", []):
            assert "PASSWORD" not in env["name"] and "SASL" not in env["name"]


@pytest.mark.parametrize("container", _containers(), ids=lambda c: c["name"])
def test_every_container_command_is_accepted_by_the_cli(container: dict[str, Any]) -> None:
    args = [a.replace("$(JOBPULSE_WORKERS)", "2") for a in container["args"]]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    for flag in (a for a in args if a.startswith("--")):
        assert flag in result.output


def test_dataflow_cluster_fits_the_state_shards() -> None:
    from jobpulse.dataflows.open_offers import SHARDS

    statefulset = _one("StatefulSet", "jobpulse-dataflow")
    replicas = statefulset["spec"]["replicas"]
    env = {
        e["name"]: e.get("value")
        for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    addresses = env["BYTEWAX_ADDRESSES"].split(";")
    assert len(addresses) == replicas
    assert all(
        a.startswith(f"{env['BYTEWAX_STATEFULSET_NAME']}-{i}.") for i, a in enumerate(addresses)
    )
    assert replicas * int(env["JOBPULSE_WORKERS"]) <= SHARDS


def test_dashboard_probes_use_the_unauthenticated_health_endpoint() -> None:
    from jobpulse.dashboard.server import API_PATH, HEALTH_PATH

    deployment = _one("Deployment", "jobpulse-dashboard")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == HEALTH_PATH, probe
        assert container[probe]["httpGet"]["path"] != API_PATH
