"""Opt-out annotations read from the Kubernetes API (read-only), cached by a periodic list.

A ScaledObject is served reactively when it, or its scale target, carries the annotation
``finops.ai/optimization-enabled: "false"``. :class:`AnnotationWatcher` lists ScaledObjects
(``keda.sh/v1alpha1``) and their targets every ``refresh_interval_s`` (30 s) in a background thread and swaps
in a new set of opted-out ScaledObjects; :meth:`AnnotationWatcher.is_opted_out` is a set lookup (no I/O).

Targets: Deployments and StatefulSets are listed per namespace through ``AppsV1Api``; any other kind (an Argo
Rollout, say) is read one object at a time through ``CustomObjectsApi`` using the target's ``apiVersion`` and
the plural ``kind.lower() + "s"``. A refresh that fails keeps the previous answers and logs the error; the
watcher never writes to the API. RBAC needed: get/list/watch on scaledobjects.keda.sh, deployments and
statefulsets (see ``manifests/rbac.yaml``).

Outside a cluster with no kubeconfig, :meth:`AnnotationWatcher.from_environment` returns a disabled watcher
(nobody is opted out) and says so once in the log.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

log = structlog.get_logger(__name__)

OPT_OUT_ANNOTATION = "finops.ai/optimization-enabled"
KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
PAGE_SIZE = 500


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


@dataclass(frozen=True, slots=True)
class WatcherStatus:
    enabled: bool
    refreshes: int
    failures: int
    last_refresh_at: float | None
    last_error: str | None
    scaled_objects: int
    opted_out: int


class AnnotationWatcher:
    """Which ScaledObjects are opted out, refreshed by a periodic list of the Kubernetes API."""

    def __init__(
        self,
        api_client: k8s.ApiClient | None,
        *,
        refresh_interval_s: float = 30.0,
        namespace: str | None = None,
        clock: Callable[[], float] = time.time,
        disabled_reason: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if refresh_interval_s <= 0:
            raise ValueError(f"refresh_interval_s={refresh_interval_s}: must be > 0")
        self._api_client = api_client
        self._custom = k8s.CustomObjectsApi(api_client) if api_client is not None else None
        self._apps = k8s.AppsV1Api(api_client) if api_client is not None else None
        self.refresh_interval_s = refresh_interval_s
        self.page_size = page_size
        self.namespace = namespace
        self._clock = clock
        self.disabled_reason = disabled_reason if api_client is not None or disabled_reason else "no API client"
        self._enabled = api_client is not None and disabled_reason is None
        self._opted_out: frozenset[tuple[str, str]] = frozenset()
        self._scaled_objects = 0
        self._refreshes = 0
        self._failures = 0
        self._last_refresh_at: float | None = None
        self._last_error: str | None = None
        self._unreadable_kinds: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = log.bind(component="annotation-watcher", namespace=namespace or "*")
        if not self._enabled:
            self._log.info("opt-out annotations disabled: nobody is opted out", reason=self.disabled_reason)

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def in_cluster(cls, *, refresh_interval_s: float = 30.0, namespace: str | None = None) -> AnnotationWatcher:
        """A started watcher using the pod's service account (raises when not in a cluster)."""
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        watcher = cls(k8s.ApiClient(configuration), refresh_interval_s=refresh_interval_s, namespace=namespace)
        watcher.start()
        return watcher

    @classmethod
    def from_environment(
        cls,
        *,
        refresh_interval_s: float = 30.0,
        namespace: str | None = None,
        kubeconfig: Path | None = None,
    ) -> AnnotationWatcher:
        """In a cluster: the service account; else a kubeconfig (``kubeconfig``, ``$KUBECONFIG`` or
        ``~/.kube/config``); else a disabled watcher. The returned watcher is started."""
        configuration = k8s.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            source = "in-cluster service account"
        else:
            path = kubeconfig or Path(
                os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config"
            )
            if not path.is_file():
                return cls(
                    None,
                    refresh_interval_s=refresh_interval_s,
                    namespace=namespace,
                    disabled_reason=f"not in a cluster and no kubeconfig at {path}",
                )
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), client_configuration=configuration
            )
            source = f"kubeconfig {path}"
        watcher = cls(k8s.ApiClient(configuration), refresh_interval_s=refresh_interval_s, namespace=namespace)
        watcher._log.info("reading opt-out annotations", api=configuration.host, credentials=source)
        watcher.start()
        return watcher

    # --- reading ----------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    def is_opted_out(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._opted_out

    def status(self) -> WatcherStatus:
        return WatcherStatus(
            enabled=self._enabled,
            refreshes=self._refreshes,
            failures=self._failures,
            last_refresh_at=self._last_refresh_at,
            last_error=self._last_error,
            scaled_objects=self._scaled_objects,
            opted_out=len(self._opted_out),
        )

    # --- refreshing -------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """List once and swap in the new answers. False (previous answers kept) when the listing failed."""
        if not self._enabled:
            return False
        try:
            opted_out, count = self._list_opted_out()
        except Exception as error:  # any failure of the API must leave the last good answers in place
            self._failures += 1
            self._last_error = _describe(error)
            self._log.warning("opt-out refresh failed; keeping previous answers", error=self._last_error)
            return False
        changed = opted_out != self._opted_out
        self._opted_out = opted_out
        self._scaled_objects = count
        self._refreshes += 1
        self._last_refresh_at = self._clock()
        self._last_error = None
        if changed:
            self._log.info(
                "opt-out set changed",
                opted_out=sorted(f"{ns}/{name}" for ns, name in opted_out),
                scaled_objects=count,
            )
        return True

    def _list_opted_out(self) -> tuple[frozenset[tuple[str, str]], int]:
        opted_out: set[tuple[str, str]] = set()
        targets: dict[ScaleTarget, list[tuple[str, str]]] = {}
        count = 0
        for scaled_object in self._scaled_objects_pages():
            count += 1
            metadata = scaled_object.get("metadata") or {}
            key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
            if annotation_opts_out(metadata.get("annotations")):
                opted_out.add(key)
                continue
            ref = (scaled_object.get("spec") or {}).get("scaleTargetRef") or {}
            if not ref.get("name"):
                continue
            target = ScaleTarget(
                namespace=key[0],
                api_version=str(ref.get("apiVersion") or "apps/v1"),
                kind=str(ref.get("kind") or "Deployment"),
                name=str(ref["name"]),
            )
            targets.setdefault(target, []).append(key)
        opted_out_targets = self._opted_out_targets(targets)
        for target in opted_out_targets:
            opted_out.update(targets[target])
        return frozenset(opted_out), count

    def _scaled_objects_pages(self) -> Iterator[dict[str, Any]]:
        assert self._custom is not None
        token: str | None = None
        page: Any
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size}
            if token:
                kwargs["_continue"] = token
            if self.namespace is None:
                page = self._custom.list_cluster_custom_object(KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL, **kwargs)
            else:
                page = self._custom.list_namespaced_custom_object(
                    KEDA_GROUP, KEDA_VERSION, self.namespace, KEDA_PLURAL, **kwargs
                )
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _opted_out_targets(self, targets: Mapping[ScaleTarget, list[tuple[str, str]]]) -> set[ScaleTarget]:
        assert self._apps is not None and self._custom is not None
        result: set[ScaleTarget] = set()
        apps_lists: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.list_namespaced_deployment,
            "StatefulSet": self._apps.list_namespaced_stateful_set,
        }
        wanted = {t for t in targets if t.api_version == "apps/v1" and t.kind in apps_lists}
        for kind, list_fn in apps_lists.items():
            for namespace in sorted({t.namespace for t in wanted if t.kind == kind}):
                for item in _typed_pages(list_fn, namespace, self.page_size):
                    target = ScaleTarget(namespace, "apps/v1", kind, item.metadata.name)
                    if target in wanted and annotation_opts_out(item.metadata.annotations):
                        result.add(target)
        for target in targets:
            if target in wanted:
                continue
            annotations = self._generic_annotations(target)
            if annotation_opts_out(annotations):
                result.add(target)
        return result

    def _generic_annotations(self, target: ScaleTarget) -> Mapping[str, str] | None:
        assert self._custom is not None
        group, _, version = target.api_version.rpartition("/")
        plural = target.kind.lower() + "s"
        obj: Any
        try:
            if group:
                obj = self._custom.get_namespaced_custom_object(group, version, target.namespace, plural, target.name)
            else:  # core group ("v1"): not a custom object; nothing scalable we know of lives there
                return None
        except ApiException as error:
            if error.status in (403, 404) and (target.api_version, target.kind) not in self._unreadable_kinds:
                self._unreadable_kinds.add((target.api_version, target.kind))
                self._log.warning(
                    "cannot read scale target kind; its annotation is not checked",
                    api_version=target.api_version,
                    kind=target.kind,
                    status=error.status,
                )
            if error.status in (403, 404):
                return None
            raise
        metadata = obj.get("metadata") or {}
        annotations: Mapping[str, str] | None = metadata.get("annotations")
        return annotations

    # --- background loop --------------------------------------------------------------------------

    def start(self) -> None:
        if not self._enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="annotation-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_interval_s)


def _typed_pages(list_fn: Callable[..., Any], namespace: str, page_size: int) -> Iterator[Any]:
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": page_size}
        if token:
            kwargs["_continue"] = token
        page = list_fn(namespace, **kwargs)
        yield from page.items or []
        token = page.metadata._continue if page.metadata is not None else None
        if not token:
            return


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"Kubernetes API answered {error.status} {error.reason}: {str(error.body)[:300]}"
    return f"{type(error).__name__}: {error}"
