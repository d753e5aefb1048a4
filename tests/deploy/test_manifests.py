"""Every object of manifests/ renders with kustomize and is valid for its kind: Kubernetes' own schemas for
built-in kinds, KEDA's and the Prometheus Operator's CRDs for theirs; unknown fields are errors."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.render import (
    KUSTOMIZATIONS,
    MANIFESTS,
    ROOT,
    Obj,
    container,
    load_all,
    one,
    pod_spec,
    render,
    validate,
)

EXAMPLES = MANIFESTS / "examples"


def example_objects() -> list[tuple[str, Obj]]:
    return [(str(p.relative_to(MANIFESTS)), o) for p in sorted(EXAMPLES.rglob("*.yaml")) for o in load_all(p)]


def _version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return version


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_renders_and_every_object_is_valid(path: str) -> None:
    objects = render(path)
    assert objects
    for obj in objects:
        validate(obj)


def test_every_example_is_valid_for_its_kind() -> None:
    kinds = set()
    for path, obj in example_objects():
        kinds.add(obj["kind"])
        if obj["apiVersion"].startswith("cert-manager.io/"):
            continue  # no cert-manager schema here: tests/deploy/test_layouts.py checks these by hand
        try:
            validate(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            raise AssertionError(f"{path}: {obj['kind']} {obj['metadata']['name']}: {exc}") from exc
    assert {"ScaledObject", "TriggerAuthentication", "Deployment", "Certificate", "ClusterIssuer"} <= kinds


def test_every_manifest_file_is_rendered_or_an_example() -> None:
    """No YAML file lies around unused: each is a kustomization, a resource or patch of one, an example or a CRD."""
    used: set[Path] = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        used.add(kustomization)
        doc = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
        for entry in [*doc.get("resources", []), *(p["path"] for p in doc.get("patches", []) if "path" in p)]:
            target = (kustomization.parent / entry).resolve()
            if target.is_file():
                used.add(target)
    loose = [
        p
        for p in MANIFESTS.rglob("*.yaml")
        if p.resolve() not in used and EXAMPLES not in p.parents and p.parent != MANIFESTS / "crds"
    ]
    assert loose == []


def test_strict_validation_catches_a_typo_and_a_wrong_type() -> None:
    """The validation is not a formality: a misspelt field and an int where KEDA wants a string both fail."""
    scaled = next(o for _, o in example_objects() if o["kind"] == "ScaledObject")
    typo = copy.deepcopy(scaled)
    typo["spec"]["pollingIntervall"] = 30
    with pytest.raises(jsonschema.ValidationError):
        validate(typo)
    wrong = copy.deepcopy(scaled)
    wrong["spec"]["triggers"][0]["metadata"]["threshold"] = 50
    with pytest.raises(jsonschema.ValidationError):
        validate(wrong)
    deployment = copy.deepcopy(one(render("base"), "Deployment"))
    container(deployment)["readinessProb"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(one(render("monitoring"), "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_image_tags_package_and_dockerfile_agree_on_the_version() -> None:
    version = _version()
    images = {
        c["image"]
        for path in KUSTOMIZATIONS
        for obj in render(path)
        if obj["kind"] in ("Deployment", "CronJob", "StatefulSet")
        for c in pod_spec(obj)["containers"]
    }
    ours = {i for i in images if i.split(":")[0] == "foresight"}
    assert ours == {f"foresight:{version}"}, ours
    for kustomization in ("base", "rightsizer"):
        doc = yaml.safe_load((MANIFESTS / kustomization / "kustomization.yaml").read_text(encoding="utf-8"))
        assert {"name": "foresight", "newName": "foresight", "newTag": version} in doc["images"]
    assert f"ARG VERSION={version}\n" in (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert all(":" in i and not i.endswith(":latest") for i in images)  # every image pinned to a tag
