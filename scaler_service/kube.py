"""Opt-out annotations read from the Kubernetes API (read-only), kept current by list-then-watch.

A ScaledObject is served reactively when it, or its scale target, carries the annotation
``finops.ai/optimization-enabled: "false"``. :class:`AnnotationWatcher` keeps three resources current, each by
a list then a watch on its own thread (:mod:`scaler_service.kube_stream`: resync every ``resync_s``, 10 min
by default; ``410 Gone`` re-lists at once; connection errors retry with capped, jittered backoff):

- ScaledObjects (``keda.sh/v1alpha1``): for each, whether it is annotated itself and its scale target;
- Deployments and StatefulSets (``apps/v1``): the names of those annotated, nothing else.

An annotation added or removed is seen as soon as the API server sends the event (well under a second),
not at the next poll. :meth:`AnnotationWatcher.is_opted_out` is a dictionary lookup (no I/O).

Any other target kind (an Argo Rollout, say) is read one object at a time through ``CustomObjectsApi`` using
the target's ``apiVersion`` and the plural ``kind.lower() + "s"``: when its ScaledObject appears or changes,
and every ``refresh_interval_s`` (30 s) after that. A read that fails keeps the previous answers and logs the
error; the watcher never writes to the API. RBAC needed: get/list/watch on scaledobjects.keda.sh,
deployments and statefulsets (see ``manifests/base``).

Memory is bounded: at most ``max_objects`` ScaledObjects and ``max_objects`` annotated targets of each kind
are remembered, as names only (beyond the cap a new object is not remembered, so not opted out, and a
warning says so once). Names longer than Kubernetes allows (253 characters) are ignored.

Outside a cluster with no kubeconfig, :meth:`AnnotationWatcher.from_environment` returns a disabled watcher
(nobody is opted out) and says so once in the log.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from scaler_service.kube_objects import (
    APPS_KINDS,
    OPT_OUT_ANNOTATION,
    Key,
    ScaledObjectEntry,
    ScaleTarget,
    annotation_opts_out,
    metadata_of,
    scaled_object_entry,
    too_long,
)
from scaler_service.kube_reads import PAGE_SIZE, KubeReads
from scaler_service.kube_stream import ListWatchLoop, WatchTiming

log = structlog.get_logger(__name__)

MAX_OBJECTS = 20_000


@dataclass(frozen=True, slots=True)
class WatcherStatus:
    enabled: bool
    refreshes: int
    failures: int
    last_refresh_at: float | None
    last_error: str | None
    scaled_objects: int
    opted_out: int
    watch_events: int = 0
    expired_watches: int = 0


def watcher_api_client(configuration: k8s.Configuration) -> k8s.ApiClient:
    """An API client whose failures reach the watch loops at once: they retry with backoff and log once,
    where urllib3's own immediate retries would log a warning for every attempt."""
    configuration.retries = False
    return k8s.ApiClient(configuration)


class AnnotationWatcher:
    """Which ScaledObjects are opted out, kept current by watching the Kubernetes API."""

    def __init__(
        self,
        api_client: k8s.ApiClient | None,
        *,
        refresh_interval_s: float = 30.0,
        resync_s: float = 600.0,
        watch_timeout_s: float = 300.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_objects: int = MAX_OBJECTS,
        namespace: str | None = None,
        clock: Callable[[], float] = time.time,
        disabled_reason: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if refresh_interval_s <= 0:
            raise ValueError(f"refresh_interval_s={refresh_interval_s}: must be > 0")
        if max_objects < 1:
            raise ValueError(f"max_objects={max_objects}: must be >= 1")
        self.timing = WatchTiming(
            resync_s=resync_s,
            watch_timeout_s=watch_timeout_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )
        self._api_client = api_client
        self.refresh_interval_s = refresh_interval_s
        self.max_objects = max_objects
        self.page_size = page_size
        self.namespace = namespace
        self._clock = clock
        self.disabled_reason = disabled_reason if api_client is not None or disabled_reason else "no API client"
        self._enabled = api_client is not None and disabled_reason is None
        # Replaced whole by a re-list, changed in place by watch events (one writer thread each).
        self._scaled_objects: dict[Key, ScaledObjectEntry] = {}
        self._opted_out_apps: dict[str, set[Key]] = {kind: set() for kind in APPS_KINDS}
        self._opted_out_generic: frozenset[ScaleTarget] = frozenset()
        self._generic_lock = threading.Lock()
        self._refreshes = 0
        self._failures = 0
        self._last_refresh_at: float | None = None
        self._last_error: str | None = None
        self._unreadable_kinds: set[tuple[str, str]] = set()
        self._capped: set[str] = set()
        self._stop = threading.Event()
        self._loops: list[ListWatchLoop] = []
        self._poller: threading.Thread | None = None
        self._log = log.bind(component="annotation-watcher", namespace=namespace or "*")
        self._reads = (
            KubeReads(api_client, namespace=namespace, page_size=page_size, log=self._log)
            if api_client is not None
            else None
        )
        if not self._enabled:
            self._log.info("opt-out annotations disabled: nobody is opted out", reason=self.disabled_reason)

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def in_cluster(
        cls, *, refresh_interval_s: float = 30.0, resync_s: float = 600.0, namespace: str | None = None
    ) -> AnnotationWatcher:
        """A started watcher using the pod's service account (raises when not in a cluster)."""
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        watcher = cls(
            watcher_api_client(configuration),
            refresh_interval_s=refresh_interval_s,
            resync_s=resync_s,
            namespace=namespace,
        )
        watcher.start()
        return watcher

    @classmethod
    def from_environment(
        cls,
        *,
        refresh_interval_s: float = 30.0,
        resync_s: float = 600.0,
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
                    resync_s=resync_s,
                    namespace=namespace,
                    disabled_reason=f"not in a cluster and no kubeconfig at {path}",
                )
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), client_configuration=configuration
            )
            source = f"kubeconfig {path}"
        watcher = cls(
            watcher_api_client(configuration),
            refresh_interval_s=refresh_interval_s,
            resync_s=resync_s,
            namespace=namespace,
        )
        watcher._log.info("reading opt-out annotations", api=configuration.host, credentials=source)
        watcher.start()
        return watcher

    @property
    def _api(self) -> KubeReads:
        assert self._reads is not None, "only an enabled watcher reads the API"
        return self._reads

    # --- reading ----------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    def is_opted_out(self, namespace: str, name: str) -> bool:
        entry = self._scaled_objects.get((namespace, name))
        if entry is None:
            return False
        if entry.opted_out:
            return True
        target = entry.target
        if target is None:
            return False
        if target.watched:
            return (target.namespace, target.name) in self._opted_out_apps[target.kind]
        return target in self._opted_out_generic

    def status(self) -> WatcherStatus:
        keys = list(self._scaled_objects)
        counters = [loop.counters for loop in self._loops]
        errors = [c.last_error for c in counters if c.last_error]
        return WatcherStatus(
            enabled=self._enabled,
            refreshes=self._refreshes + sum(c.relists for c in counters[:1]),
            failures=self._failures + sum(c.failures for c in counters),
            last_refresh_at=self._last_refresh_at,
            last_error=errors[0] if errors else self._last_error,
            scaled_objects=len(keys),
            opted_out=sum(self.is_opted_out(*key) for key in keys),
            watch_events=sum(c.events for c in counters),
            expired_watches=sum(c.expired for c in counters),
        )

    # --- listing ----------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """List everything once and swap in the new answers. False (previous answers kept) on a failure."""
        if not self._enabled:
            return False
        try:
            self._relist_scaled_objects()
            for kind in APPS_KINDS:
                self._relist_apps(kind)
            self._refresh_generic()
        except Exception as error:  # any failure of the API must leave the last good answers in place
            self._failures += 1
            self._last_error = _describe(error)
            self._log.warning("opt-out refresh failed; keeping previous answers", error=self._last_error)
            return False
        self._refreshes += 1
        self._last_refresh_at = self._clock()
        self._last_error = None
        return True

    def _relist_scaled_objects(self) -> str:
        entries: dict[Key, ScaledObjectEntry] = {}
        pages = self._api.scaled_object_pages()
        resource_version = str(next(pages))
        for obj in pages:
            parsed = scaled_object_entry(obj) if isinstance(obj, dict) else None
            if parsed is not None and self._room("scaledobjects", len(entries), parsed[0] in entries):
                entries[parsed[0]] = parsed[1]
        before = self._opted_out_keys()
        self._scaled_objects = entries
        self._last_refresh_at = self._clock()
        self._log_change(before)
        return resource_version

    def _relist_scaled_objects_and_targets(self) -> str:
        resource_version = self._relist_scaled_objects()
        try:
            self._refresh_generic()
        except Exception as error:  # one unreadable target kind must not stop the watch; the poller retries
            self._log.warning("reading scale targets failed; keeping previous answers", error=_describe(error))
        return resource_version

    def _relist_apps(self, kind: str) -> str:
        opted_out: set[Key] = set()
        pages = self._api.apps_pages(kind)
        resource_version = str(next(pages))
        for item in pages:
            namespace, name, annotations = metadata_of(item)
            key = (namespace, name)
            wanted = annotation_opts_out(annotations) and not too_long(namespace, name)
            if wanted and self._room(kind, len(opted_out), key in opted_out):
                opted_out.add(key)
        before = self._opted_out_keys()
        self._opted_out_apps[kind] = opted_out
        self._log_change(before)
        return resource_version

    # --- watch events -----------------------------------------------------------------------------

    def _apply_scaled_object(self, kind: str, obj: Any) -> None:
        parsed = scaled_object_entry(obj) if isinstance(obj, dict) else None
        if parsed is None:
            return
        key, entry = parsed
        was = self.is_opted_out(*key)
        if kind == "DELETED":
            self._scaled_objects.pop(key, None)
        elif self._room("scaledobjects", len(self._scaled_objects), key in self._scaled_objects):
            self._scaled_objects[key] = entry
            if entry.target is not None and not entry.target.watched:
                self._read_generic_target(entry.target)
        now = self.is_opted_out(*key)
        if now != was:
            self._log.info("opt-out changed", scaled_object=f"{key[0]}/{key[1]}", opted_out=now, change=kind)

    def _apply_apps(self, kind: str) -> Callable[[str, Any], None]:
        def apply(event: str, obj: Any) -> None:
            namespace, name, annotations = metadata_of(obj)
            key = (namespace, name)
            opted_out = self._opted_out_apps[kind]
            was = key in opted_out
            if event != "DELETED" and annotation_opts_out(annotations) and not too_long(namespace, name):
                if self._room(kind, len(opted_out), was):
                    opted_out.add(key)
            else:
                opted_out.discard(key)
            if (key in opted_out) != was:
                self._log.info(
                    "scale target opt-out changed", target=f"{kind}/{namespace}/{name}", opted_out=not was, change=event
                )

        return apply

    def _room(self, what: str, size: int, known: bool) -> bool:
        """Whether one more object fits under ``max_objects``; warns once per resource when it does not."""
        if known or size < self.max_objects:
            return True
        if what not in self._capped:
            self._capped.add(what)
            self._log.warning(
                "too many objects to remember; further ones are not opted out",
                resource=what,
                max_objects=self.max_objects,
            )
        return False

    def _opted_out_keys(self) -> frozenset[Key]:
        return frozenset(key for key in list(self._scaled_objects) if self.is_opted_out(*key))

    def _log_change(self, before: frozenset[Key]) -> None:
        after = self._opted_out_keys()
        if after != before:
            self._log.info(
                "opt-out set changed",
                opted_out=sorted(f"{ns}/{name}" for ns, name in after)[:50],
                opted_out_count=len(after),
                scaled_objects=len(self._scaled_objects),
            )

    # --- targets read one at a time ---------------------------------------------------------------

    def _refresh_generic(self) -> None:
        targets = {e.target for e in list(self._scaled_objects.values()) if e.target and not e.target.watched}
        opted_out = {t for t in targets if annotation_opts_out(self._api.annotations_of(t))}
        before = self._opted_out_keys()
        with self._generic_lock:
            self._opted_out_generic = frozenset(opted_out)
        self._log_change(before)

    def _read_generic_target(self, target: ScaleTarget) -> None:
        try:
            opted_out = annotation_opts_out(self._api.annotations_of(target))
        except Exception as error:  # the periodic read tries again; the watch goes on
            self._log.warning("cannot read scale target", target=f"{target.kind}/{target.name}", error=_describe(error))
            return
        with self._generic_lock:
            current = set(self._opted_out_generic)
            (current.add if opted_out else current.discard)(target)
            self._opted_out_generic = frozenset(current)

    # --- background threads -----------------------------------------------------------------------

    def start(self) -> None:
        if not self._enabled or self._loops:
            return
        self._stop.clear()
        watch_fn, watch_args = self._api.scaled_objects_watch()
        self._loops = [
            ListWatchLoop(
                "scaledobjects",
                relist=self._relist_scaled_objects_and_targets,
                watch_fn=watch_fn,
                watch_args=watch_args,
                apply=self._apply_scaled_object,
                timing=self.timing,
                describe=_describe,
            )
        ]
        for kind in APPS_KINDS:
            list_fn, args = self._api.apps_list(kind)
            self._loops.append(
                ListWatchLoop(
                    kind.lower() + "s",
                    relist=lambda kind=kind: self._relist_apps(kind),  # type: ignore[misc]
                    watch_fn=list_fn,
                    watch_args=args,
                    apply=self._apply_apps(kind),
                    timing=self.timing,
                    describe=_describe,
                )
            )
        for loop in self._loops:
            loop.start()
        self._poller = threading.Thread(target=self._poll_generic, name="annotation-targets", daemon=True)
        self._poller.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stops every thread; returns within about ``timeout_s`` (the open watches are shut down)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        loops, self._loops = self._loops, []
        for loop in loops:
            loop._stop.set()
        for loop in loops:
            loop.stop(max(0.1, deadline - time.monotonic()))
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.join(max(0.1, deadline - time.monotonic()))

    def _poll_generic(self) -> None:
        while not self._stop.wait(self.refresh_interval_s):
            if not any(e.target and not e.target.watched for e in list(self._scaled_objects.values())):
                continue
            try:
                self._refresh_generic()
            except Exception as error:  # keep the previous answers; try again next period
                self._failures += 1
                self._last_error = _describe(error)
                self._log.warning("reading scale targets failed; keeping previous answers", error=self._last_error)


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"Kubernetes API answered {error.status} {error.reason}: {str(error.body)[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


__all__ = [
    "OPT_OUT_ANNOTATION",
    "AnnotationWatcher",
    "ScaleTarget",
    "WatcherStatus",
    "annotation_opts_out",
    "watcher_api_client",
]
