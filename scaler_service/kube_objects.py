"""What the opt-out reader keeps of Kubernetes objects: names and one annotation, parsed from API answers.

Pure functions and value types, no I/O. Objects arrive as raw dicts (custom objects: ScaledObjects) or typed
models (``apps/v1``); both are read through :func:`metadata_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPT_OUT_ANNOTATION = "finops.ai/optimization-enabled"
KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
MAX_NAME_CHARS = 253
"""The longest name (and namespace, kind, apiVersion) Kubernetes allows; anything longer is not a real object."""
APPS_KINDS = ("Deployment", "StatefulSet")

Key = tuple[str, str]


def annotation_opts_out(annotations: Mapping[str, str] | None) -> bool:
    """True when ``finops.ai/optimization-enabled`` is ``"false"`` (any case, surrounding spaces ignored)."""
    if not annotations:
        return False
    return str(annotations.get(OPT_OUT_ANNOTATION, "")).strip().lower() == "false"


@dataclass(frozen=True, slots=True)
class ScaleTarget:
    namespace: str
    api_version: str
    kind: str
    name: str

    @property
    def watched(self) -> bool:
        """Deployments and StatefulSets are watched; any other kind is read one object at a time."""
        return self.api_version == "apps/v1" and self.kind in APPS_KINDS


@dataclass(frozen=True, slots=True)
class ScaledObjectEntry:
    """What is remembered of one ScaledObject: its own opt-out and its target's names."""

    opted_out: bool
    target: ScaleTarget | None


def metadata_of(obj: Any) -> tuple[str, str, Mapping[str, str] | None]:
    """(namespace, name, annotations) of a raw dict (custom objects) or a typed model (apps/v1)."""
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations")
        return (
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            annotations if isinstance(annotations, dict) else None,
        )
    meta = obj.metadata
    return str(meta.namespace or ""), str(meta.name or ""), meta.annotations


def too_long(*names: str) -> bool:
    return any(len(n) > MAX_NAME_CHARS for n in names)


def scaled_object_entry(obj: Mapping[str, Any]) -> tuple[Key, ScaledObjectEntry] | None:
    """The names kept of one ScaledObject; None when it is not a well-formed object."""
    namespace, name, annotations = metadata_of(obj)
    if not name or too_long(namespace, name):
        return None
    key = (namespace, name)
    if annotation_opts_out(annotations):
        return key, ScaledObjectEntry(True, None)
    spec = obj.get("spec")
    ref = spec.get("scaleTargetRef") if isinstance(spec, dict) else None
    if not isinstance(ref, dict) or not ref.get("name"):
        return key, ScaledObjectEntry(False, None)
    target = ScaleTarget(
        namespace=namespace,
        api_version=str(ref.get("apiVersion") or "apps/v1"),
        kind=str(ref.get("kind") or "Deployment"),
        name=str(ref["name"]),
    )
    if too_long(target.api_version, target.kind, target.name):
        return key, ScaledObjectEntry(False, None)
    return key, ScaledObjectEntry(False, target)
