"""The Kubernetes manifests, the image and docker-compose.yml agree with the code and with
what a platform engineer expects, checked on every overlay as kustomize renders it: settings,
commands, one value for the cluster size, Pod Security ``restricted``, resources, storage,
probes, labels, the namespace left alone by ``kubectl delete -k``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy import (
    K8S,
    OVERLAYS,
    REPO,
    containers,
    documents,
    kustomize_build,
    one,
    pod_specs,
    rendered,
)
from typer.testing import CliRunner

from jobpulse import settings as settings_module
from jobpulse.cli.main import app
from jobpulse.dataflows.cli import _cluster_from_env

DOCKERFILE = (REPO / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _docs(overlay: str) -> list[dict[str, Any]]:
    return documents(rendered(overlay))


def _dockerfile_env(name: str) -> str:
    match = re.search(rf"^\s+{name}=(\S+?)\s*\\?$", DOCKERFILE, re.MULTILINE)
    assert match, name
    return match.group(1)


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _substituted(arg: str, env: dict[str, str | None]) -> str:
    """``arg`` with Kubernetes' ``$(VAR)`` references replaced by the container's env."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)] or "", arg)


def _cli_accepts(args: list[str]) -> None:
    """``jobpulse *args --help`` works and knows every flag of ``args``."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    for flag in (a for a in args if a.startswith("--")):
        assert flag in result.output, flag


# -- settings and commands ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_only_real_settings_and_loads(overlay: str) -> None:
    data = one(_docs(overlay), "ConfigMap", "jobpulse-settings-")["data"]
    known = {settings_module.env_var(name) for name in settings_module.Settings.model_fields}
    assert set(data) <= known, set(data) - known
    loaded = settings_module.load(env=data)
    assert loaded.partitions == int(data["JOBPULSE_PARTITIONS"])
    # The state dir is the image's, where every pod mounts a writable emptyDir.
    assert "JOBPULSE_STATE_DIR" not in data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_in_the_manifests(overlay: str) -> None:
    docs = _docs(overlay)
    assert all(d["kind"] != "Secret" for d in docs), "secrets are created by the operator"
    for _, spec in pod_specs(docs):
        for container in containers(spec):
            for name in _env(container):
                assert not settings_module.is_secret_key(name), name
            refs = [r.get("secretRef", {}).get("name") for r in container.get("envFrom", [])]
            assert "jobpulse-credentials" in refs, container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_command_is_accepted_by_the_cli(overlay: str) -> None:
    for _, spec in pod_specs(_docs(overlay)):
        for container in containers(spec):
            env = _env(container)
            _cli_accepts([_substituted(a, env) for a in container["args"]])


def test_compose_commands_and_settings_are_real() -> None:
    known = {settings_module.env_var(name) for name in settings_module.Settings.model_fields}
    for name, service in COMPOSE["services"].items():
        if service.get("image") != "jobpulse:local":
            continue
        assert set(service["environment"]) <= known, (name, set(service["environment"]) - known)
        settings_module.load(env=service["environment"])
        _cli_accepts(service["command"])
    assert {"topics", "dataflow", "postgres-sink", "dashboard", "producer"} <= set(
        COMPOSE["services"]
    )
    assert COMPOSE["services"]["producer"]["profiles"] == ["producer"]


def test_compose_kafka_has_a_listener_for_containers_and_one_for_the_host() -> None:
    kafka = COMPOSE["services"]["kafka"]["environment"]
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:19092" in advertised and "localhost:9092" in advertised
    assert COMPOSE["x-jobpulse"]["environment"]["JOBPULSE_KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", COMPOSE["services"]["redis"]["image"])


# -- the dataflow cluster ----------------------------------------------------------------------


def _dataflow(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    statefulset = one(docs, "StatefulSet", "")
    container = next(
        c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "dataflow"
    )
    return statefulset, container


def _peers_of(statefulset: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The peer addresses every pod of ``statefulset`` derives (all must agree)."""
    env = {k: v for k, v in _env(container).items() if v is not None}
    derived = set()
    replicas = statefulset["spec"]["replicas"]
    for ordinal in range(replicas):
        pod = {**env, "BYTEWAX_POD_NAME": f"{statefulset['metadata']['name']}-{ordinal}"}
        process_id, addresses = _cluster_from_env(pod)
        assert process_id == ordinal
        derived.add(addresses)
    assert len(derived) == 1
    return derived.pop().split(";")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_size_is_one_value(overlay: str) -> None:
    from jobpulse.dataflows.open_offers import SHARDS

    docs = _docs(overlay)
    statefulset, container = _dataflow(docs)
    env = _env(container)
    replicas = statefulset["spec"]["replicas"]
    assert "BYTEWAX_ADDRESSES" not in env
    assert env["BYTEWAX_REPLICAS"] == str(replicas)  # copied by the overlay's replacement
    assert replicas * int(env["BYTEWAX_WORKERS_PER_PROCESS"] or 0) <= SHARDS
    service = one(docs, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    name = statefulset["metadata"]["name"]
    assert _peers_of(statefulset, container) == [
        f"{name}-{i}.{service['metadata']['name']}:2101" for i in range(replicas)
    ]


def test_a_name_prefix_keeps_the_peers_right(tmp_path: Path) -> None:
    """A kustomize namePrefix renames the StatefulSet and its Service alike: the derived
    peers still name the pods and the Service that exist."""
    overlay = tmp_path / "prefixed"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                # (kustomize takes relative paths only)
                "resources": [os.path.relpath(K8S / "overlays" / "production", overlay)],
                "namePrefix": "team-",
            }
        )
    )
    docs = documents(kustomize_build(overlay))
    statefulset, container = _dataflow(docs)
    assert statefulset["metadata"]["name"] == "team-jobpulse-dataflow"
    service = statefulset["spec"]["serviceName"]
    assert one(docs, "Service", service)["spec"]["clusterIP"] == "None"
    assert _peers_of(statefulset, container)[2] == f"team-jobpulse-dataflow-2.{service}:2101"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_is_never_rolled_pod_by_pod(overlay: str) -> None:
    statefulset, container = _dataflow(_docs(overlay))
    assert statefulset["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:4] == ["python", "-P", "-m", "jobpulse.cli.kubernetes"], probe
    # The topics are made by an init container before the dataflow starts (no Job to race).
    init = statefulset["spec"]["template"]["spec"]["initContainers"]
    assert [c["args"] for c in init] == [["topics", "create"]]


def test_the_probe_command_runs_and_a_single_member_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-P", "-m", "jobpulse.cli.kubernetes", "cluster-check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"BYTEWAX_REPLICAS": "1", "BYTEWAX_POD_NAME": "jobpulse-dataflow-0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "single member" in result.stdout


# -- security, resources, storage -----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_passes_pod_security_restricted(overlay: str) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert user, "the image's USER must be numeric"
    for name, spec in pod_specs(_docs(overlay)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert str(pod["runAsUser"]) == user.group(1), name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        if any("persistentVolumeClaim" in v for v in spec.get("volumes", [])):
            assert str(pod["fsGroup"]) == user.group(2), name
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resources_and_writable_scratch(overlay: str) -> None:
    state_dir = _dockerfile_env("JOBPULSE_STATE_DIR")
    for _, spec in pod_specs(_docs(overlay)):
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in containers(spec):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory", "ephemeral-storage"} <= set(resources[kind]), container
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] in empty_dirs and mounts[state_dir] in empty_dirs


def test_recovery_storage_per_overlay() -> None:
    dev = one(_docs("dev"), "PersistentVolumeClaim", "jobpulse-recovery")["spec"]
    assert dev["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in dev
    assert one(_docs("dev"), "StatefulSet", "")["spec"]["replicas"] == 1
    production = one(_docs("production"), "PersistentVolumeClaim", "jobpulse-recovery")["spec"]
    assert production["accessModes"] == ["ReadWriteMany"] and production["storageClassName"]
    assert one(_docs("production"), "StatefulSet", "")["spec"]["replicas"] == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_come_from_the_overlay(overlay: str) -> None:
    for _, spec in pod_specs(_docs(overlay)):
        for container in containers(spec):
            image = container["image"]
            assert re.fullmatch(r"[a-z0-9./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image), image
            assert not image.endswith(":latest"), image
    if overlay == "production":
        assert all("/" in c["image"] for _, s in pod_specs(_docs(overlay)) for c in containers(s))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_labels_policies_and_the_namespace(overlay: str) -> None:
    docs = _docs(overlay)
    assert all(d["kind"] != "Namespace" for d in docs), "kubectl delete -k must keep it"
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "jobpulse", doc["metadata"]["name"]
        assert "app.kubernetes.io/part-of" in labels and "app.kubernetes.io/version" in labels
    protected = {
        d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    workloads = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    for workload in workloads:
        component = workload["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"
        ]
        assert component in protected, workload["metadata"]["name"]
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert {"jobpulse-dataflow", "jobpulse-dashboard"} <= budgets
    namespace = yaml.safe_load((K8S / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_pod_serves_metrics_that_can_be_scraped(overlay: str) -> None:
    """The ConfigMap's metrics port is each main container's "metrics" port, announced by
    the pod's scrape annotations and let in by its NetworkPolicy, on all interfaces."""
    docs = _docs(overlay)
    data = one(docs, "ConfigMap", "jobpulse-settings-")["data"]
    port = int(data["JOBPULSE_METRICS_PORT"])
    assert data["JOBPULSE_METRICS_HOST"] == "0.0.0.0"  # the default, loopback, is unscrapable
    allowed = {
        d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: {
            p["port"] for rule in d["spec"].get("ingress", []) for p in rule.get("ports", [])
        }
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    workloads = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    assert len(workloads) == 3  # the dataflow, the dashboard, the PostgreSQL sink
    for workload in workloads:
        template = workload["spec"]["template"]
        name = workload["metadata"]["name"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port), name
        for container in template["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            assert ports.get("metrics") == port, name
        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        assert port in allowed[component], name


# -- the dashboard ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboard_probes_use_the_unauthenticated_health_endpoint(overlay: str) -> None:
    from jobpulse.dashboard.server import API_PATH, HEALTH_PATH

    deployment = one(_docs(overlay), "Deployment", "jobpulse-dashboard")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert all(p["httpGet"]["path"] == HEALTH_PATH != API_PATH for p in probes)
    # Readiness reacts quickly, liveness restarts only after a long silence.
    ready, live = probes[1], probes[2]
    assert ready["periodSeconds"] * ready["failureThreshold"] < (
        live["periodSeconds"] * live["failureThreshold"]
    )
    docs_text = (REPO / "README.md").read_text() + (REPO / "docs/kubernetes.md").read_text()
    assert "readiness on `/api/breakdown`" not in docs_text
    assert f"`{HEALTH_PATH}`" in (REPO / "docs/kubernetes.md").read_text()


def test_dockerfile_practice() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", DOCKERFILE, re.M)
    assert _dockerfile_env("PYTHONUNBUFFERED") == "1"
    assert "HEALTHCHECK" in DOCKERFILE and "org.opencontainers.image.version" in DOCKERFILE
    assert re.search(r"^WORKDIR /var/lib/jobpulse$", DOCKERFILE, re.M)  # no source tree there
    # Every package folder pyproject.toml maps goes into the image.
    pyproject = (REPO / "pyproject.toml").read_text()
    folders = set(re.findall(r'"jobpulse(?:\.\w+)?" = "(\w+)"', pyproject))
    assert folders == set(re.findall(r"^COPY (\w+) \1$", DOCKERFILE, re.M))
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][1:] == [
        "!pyproject.toml", "!README.md", *(f"!{f}/" for f in ["jobpulse", "stack", "producer",
        "dataflows", "dashboard", "postgres", "cli"]), "**/__pycache__", "**/*.pyc",
    ]  # fmt: skip
