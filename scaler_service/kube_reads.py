"""The read calls the opt-out reader makes to the Kubernetes API (list pages, watch functions, single gets).

Every call is a GET with a timeout; nothing here writes. Lists are paged (``limit``/``continue``) and yield
the list's ``resourceVersion`` first, so a watch can start where the list ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from scaler_service.kube_objects import KEDA_GROUP, KEDA_PLURAL, KEDA_VERSION, ScaleTarget

PAGE_SIZE = 500
LIST_TIMEOUT = (10.0, 60.0)
"""(connect, read) seconds for one list page or get."""


class KubeReads:
    """The API calls for one watcher: cluster-wide, or one namespace when ``namespace`` is given."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        namespace: str | None,
        page_size: int = PAGE_SIZE,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.custom = k8s.CustomObjectsApi(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.namespace = namespace
        self.page_size = page_size
        self._log = log or structlog.get_logger(__name__)
        self._unreadable_kinds: set[tuple[str, str]] = set()

    def scaled_object_pages(self) -> Iterator[Any]:
        """The list's resourceVersion first, then every ScaledObject, page by page."""
        token: str | None = None
        first = True
        page: Any
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, "_request_timeout": LIST_TIMEOUT}
            if token:
                kwargs["_continue"] = token
            if self.namespace is None:
                page = self.custom.list_cluster_custom_object(KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL, **kwargs)
            else:
                page = self.custom.list_namespaced_custom_object(
                    KEDA_GROUP, KEDA_VERSION, self.namespace, KEDA_PLURAL, **kwargs
                )
            metadata = page.get("metadata") or {}
            if first:
                yield str(metadata.get("resourceVersion") or "")
                first = False
            yield from page.get("items") or []
            token = metadata.get("continue")
            if not token:
                return

    def apps_pages(self, kind: str) -> Iterator[Any]:
        """The list's resourceVersion first, then every object of ``kind``, page by page."""
        list_fn, args = self.apps_list(kind)
        token: str | None = None
        first = True
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, "_request_timeout": LIST_TIMEOUT}
            if token:
                kwargs["_continue"] = token
            page = list_fn(*args, **kwargs)
            if first:
                yield str(page.metadata.resource_version or "") if page.metadata is not None else ""
                first = False
            yield from page.items or []
            token = page.metadata._continue if page.metadata is not None else None
            if not token:
                return

    def apps_list(self, kind: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if kind == "Deployment":
            if self.namespace is None:
                return self.apps.list_deployment_for_all_namespaces, ()
            return self.apps.list_namespaced_deployment, (self.namespace,)
        if self.namespace is None:
            return self.apps.list_stateful_set_for_all_namespaces, ()
        return self.apps.list_namespaced_stateful_set, (self.namespace,)

    def scaled_objects_watch(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if self.namespace is None:
            return self.custom.list_cluster_custom_object, (KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL)
        return self.custom.list_namespaced_custom_object, (KEDA_GROUP, KEDA_VERSION, self.namespace, KEDA_PLURAL)

    def annotations_of(self, target: ScaleTarget) -> Mapping[str, str] | None:
        group, _, version = target.api_version.rpartition("/")
        plural = target.kind.lower() + "s"
        obj: Any
        try:
            if group:
                obj = self.custom.get_namespaced_custom_object(
                    group, version, target.namespace, plural, target.name, _request_timeout=LIST_TIMEOUT
                )
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
        metadata = obj.get("metadata") or {} if isinstance(obj, dict) else {}
        annotations = metadata.get("annotations")
        return annotations if isinstance(annotations, dict) else None
