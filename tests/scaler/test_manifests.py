"""The kustomize base in manifests/: parses, lists every file; the example ScaledObject is valid for KEDA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rightsizer.settings import settings_from_mapping
from scaler_service.settings import settings_from_sources

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
CRD = MANIFESTS / "crds" / "keda.sh_scaledobjects.yaml"
EXAMPLE = MANIFESTS / "examples" / "scaledobject.yaml"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    return doc


def base_objects() -> list[dict[str, Any]]:
    return [obj for name in kustomization()["resources"] for obj in load_all(MANIFESTS / name)]


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in base_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_every_yaml_file_parses() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        for doc in load_all(path):
            assert "apiVersion" in doc and "kind" in doc, path


def test_kustomization_lists_every_base_file() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk
    for obj in base_objects():
        assert obj["kind"] != "Namespace"  # namespace-less base


def test_example_scaled_object_validates_against_keda_crd_schema() -> None:
    crd = load_all(CRD)[0]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = version["schema"]["openAPIV3Schema"]
    (example,) = load_all(EXAMPLE)
    jsonschema.validate(example, schema)
    trigger = example["spec"]["triggers"][0]
    assert trigger["type"] == "external"
    assert trigger["metadata"]["scalerAddress"] == "foresight-scaler.keda:9090"
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA metadata is map[string]string
    assert example["spec"]["fallback"]["failureThreshold"] >= 1

    broken = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 50  # an int where KEDA wants a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_deployment_runs_two_non_root_read_only_replicas_with_grpc_probes() -> None:
    deployment = by_kind("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["grpc"]["port"] == 9090
    assert container["livenessProbe"]["grpc"]["port"] == 9090
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # cmdstan needs a writable temporary directory


def test_service_is_headless_with_grpc_and_metrics_ports() -> None:
    service = by_kind("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in service["spec"]["ports"]} == {9090, 8080}
    deployment = by_kind("Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_rbac_is_read_only() -> None:
    role = by_kind("ClusterRole")
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    resources = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert resources == {("keda.sh", "scaledobjects"), ("apps", "deployments"), ("apps", "statefulsets")}
    binding = by_kind("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == by_kind("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]


def test_scaler_config_map_holds_settings_the_service_accepts(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(by_kind("ConfigMap", "foresight-scaler-config")["data"]["config.yaml"], encoding="utf-8")
    settings = settings_from_sources({}, {}, config)
    assert settings.grpc_port == 9090 and settings.http_port == 8080


def test_rightsizer_cron_job_is_a_forbid_concurrency_dry_run() -> None:
    cron = by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "rightsizer"]
    assert "--apply" not in container["args"]
    assert container["image"] == by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    account = by_kind("ServiceAccount", "foresight-rightsizer")
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    config = yaml.safe_load(by_kind("ConfigMap", "foresight-rightsizer-config")["data"]["config.yaml"])
    assert config["dry_run"] is True
    assert settings_from_mapping(config).dry_run is True  # the rightsizer accepts this file


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (Debian kubernetes-client) not installed")
def test_kubectl_kustomize_renders_the_base() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True
    ).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered) if doc)
    assert kinds == sorted(
        ["ServiceAccount", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap",
         "Deployment", "Service", "CronJob"]
    )  # fmt: skip
