"""A fake Kubernetes API server (real HTTP on loopback) for the read paths the annotation watcher uses.

It serves complete objects (the ``kubernetes`` client validates responses strictly) for:

- ``GET /apis/keda.sh/v1alpha1/scaledobjects`` and ``.../namespaces/{ns}/scaledobjects`` (list, with
  ``limit``/``continue`` paging),
- ``GET /apis/apps/v1/namespaces/{ns}/deployments|statefulsets`` and the cluster-wide lists,
- ``GET /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}`` for any other stored object,
- ``GET /api``, ``/apis`` (minimal discovery), and a ``Status`` 404 for anything else,
- ``?watch=true`` on any list, as the API server does: a chunked stream of JSON lines
  ``{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}`` for every change after ``resourceVersion``
  (replayed from a history of changes), held open until ``timeoutSeconds``; when ``resourceVersion`` is older
  than the history (see :meth:`FakeKubeApi.compact`), one ``ERROR`` event carrying a ``410 Gone`` Status.

:meth:`FakeKubeApi.go_away` closes the port and cuts the open watches (an API server restart);
:meth:`FakeKubeApi.come_back` listens on the same port again.

Only GET is served: anything else answers 405 and is recorded, so tests can assert the client stayed
read-only. A bearer token can be required. ``fail_with = 503`` makes every request fail (API outage).

Usage::

    with FakeKubeApi(token="t") as api:
        api.add_deployment("shop", "web")
        api.add_scaled_object("shop", "web-so", target_name="web")
        api.set_annotations("deployments", "shop", "web", {"finops.ai/optimization-enabled": "false"})
        client = api.api_client()      # a kubernetes.client.ApiClient pointed at the fake
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client as k8s

CREATED = "2026-01-01T00:00:00Z"

_LIST_KINDS = {
    ("keda.sh", "v1alpha1", "scaledobjects"): ("keda.sh/v1alpha1", "ScaledObjectList"),
    ("apps", "v1", "deployments"): ("apps/v1", "DeploymentList"),
    ("apps", "v1", "statefulsets"): ("apps/v1", "StatefulSetList"),
}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKubeApi:
    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        # (group, version, plural) -> {(namespace, name): object}
        self.objects: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self._resource_version = 1
        # (resourceVersion, resource, event type, object) of every change; a watch replays those after its version
        self._history: list[tuple[int, tuple[str, str, str], str, dict[str, Any]]] = []
        self._oldest_replayable = 0
        self._changed = threading.Condition(self._lock)
        self._open_watches: set[socket.socket] = set()
        self._closing = False
        self.watch_requests = 0
        self._server = self._bind(0)
        self._port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def _bind(self, port: int) -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        server.daemon_threads = True
        return server

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeKubeApi:
        with self._lock:
            self._closing = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._cut_watches()
        self._server.shutdown()
        self._server.server_close()

    def go_away(self) -> None:
        """The API server goes down: the port is closed and every open watch is cut mid-stream."""
        self.stop()

    def come_back(self) -> None:
        """The API server is back on the same address, with the same objects and history."""
        self._server = self._bind(self._port)
        self.start()

    def _cut_watches(self) -> None:
        with self._lock:
            self._closing = True
            sockets = list(self._open_watches)
            self._changed.notify_all()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def compact(self) -> None:
        """Forget the history of changes, as etcd compaction does: a watch from an older version gets 410."""
        with self._lock:
            self._history.clear()
            self._oldest_replayable = self._resource_version

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configuration(self) -> k8s.Configuration:
        configuration = k8s.Configuration(host=self.url)
        if self.token is not None:
            configuration.api_key = {"authorization": self.token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return configuration

    def api_client(self) -> k8s.ApiClient:
        return k8s.ApiClient(self.configuration())

    def kubeconfig(self) -> str:
        """A kubeconfig (YAML text) pointing at this server."""
        user = {"token": self.token} if self.token is not None else {}
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": user}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )

    # --- state ------------------------------------------------------------------------------------

    def _metadata(self, namespace: str, name: str, annotations: Mapping[str, str] | None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "0",  # set when stored
            "generation": 1,
            "creationTimestamp": CREATED,
            "annotations": dict(annotations or {}),
            "labels": {"app": name},
        }

    def _put(self, resource: tuple[str, str, str], obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        with self._lock:
            objects = self.objects.setdefault(resource, {})
            event = "MODIFIED" if (meta["namespace"], meta["name"]) in objects else "ADDED"
            objects[(meta["namespace"], meta["name"])] = obj
            self._record(resource, event, obj)
        return obj

    def _record(self, resource: tuple[str, str, str], event: str, obj: dict[str, Any]) -> None:
        """Give ``obj`` the next resourceVersion and remember the change for watches (lock held)."""
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)
        self._history.append((self._resource_version, resource, event, json.loads(json.dumps(obj))))
        self._changed.notify_all()

    def _workload(self, kind: str, namespace: str, name: str, annotations: Mapping[str, str] | None) -> Any:
        spec: dict[str, Any] = {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        }
        if kind == "StatefulSet":
            spec["serviceName"] = name
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": self._metadata(namespace, name, annotations),
            "spec": spec,
            "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 1},
        }

    def add_deployment(self, namespace: str, name: str, annotations: Mapping[str, str] | None = None) -> None:
        self._put(("apps", "v1", "deployments"), self._workload("Deployment", namespace, name, annotations))

    def add_stateful_set(self, namespace: str, name: str, annotations: Mapping[str, str] | None = None) -> None:
        self._put(("apps", "v1", "statefulsets"), self._workload("StatefulSet", namespace, name, annotations))

    def add_custom_object(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        namespace: str,
        name: str,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        obj = {
            "apiVersion": f"{group}/{version}",
            "kind": kind,
            "metadata": self._metadata(namespace, name, annotations),
            "spec": {"replicas": 1},
        }
        self._put((group, version, plural), obj)

    def add_scaled_object(
        self,
        namespace: str,
        name: str,
        *,
        target_name: str,
        target_kind: str | None = None,
        target_api_version: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        ref: dict[str, Any] = {"name": target_name}
        if target_kind is not None:
            ref["kind"] = target_kind
        if target_api_version is not None:
            ref["apiVersion"] = target_api_version
        obj = {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": self._metadata(namespace, name, annotations),
            "spec": {
                "scaleTargetRef": ref,
                "triggers": [
                    {
                        "type": "external",
                        "metadata": {
                            "scalerAddress": "foresight-scaler.keda:9090",
                            "query": "nasa-http-1995",
                            "threshold": "50",
                        },
                    }
                ],
            },
        }
        self._put(("keda.sh", "v1alpha1", "scaledobjects"), obj)

    def set_annotations(
        self, plural: str, namespace: str, name: str, annotations: Mapping[str, str], group: str | None = None
    ) -> None:
        """Replace the annotations of a stored object (``plural``: scaledobjects, deployments, ...)."""
        with self._lock:
            for resource, objects in self.objects.items():
                g, _, p = resource
                if p == plural and (group is None or g == group) and (namespace, name) in objects:
                    obj = objects[(namespace, name)]
                    obj["metadata"]["annotations"] = dict(annotations)
                    self._record(resource, "MODIFIED", obj)
                    return
        raise KeyError(f"no {plural} {namespace}/{name}")

    def delete(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            for resource, objects in self.objects.items():
                if resource[2] == plural and (namespace, name) in objects:
                    self._record(resource, "DELETED", objects.pop((namespace, name)))

    # --- HTTP -------------------------------------------------------------------------------------

    def _answer(self, method: str, raw_path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((method, raw_path))
        if self.fail_with is not None:
            return self.fail_with, _status(self.fail_with, "ServiceUnavailable", "fake outage")
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        if method != "GET":
            return 405, _status(405, "MethodNotAllowed", f"{method} is not served by this read-only fake")
        url = urlparse(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
            if len(rest) == 1:
                return self._list((group, version, rest[0]), None, query)
            if len(rest) == 3 and rest[0] == "namespaces":
                return self._list((group, version, rest[2]), rest[1], query)
            if len(rest) == 4 and rest[0] == "namespaces":
                with self._lock:
                    obj = self.objects.get((group, version, rest[2]), {}).get((rest[1], rest[3]))
                if obj is not None:
                    return 200, obj
                return 404, _status(404, "NotFound", f'{rest[2]}.{group} "{rest[3]}" not found')
        return 404, _status(404, "NotFound", f"the server could not find the requested resource {url.path}")

    def _list(
        self, resource: tuple[str, str, str], namespace: str | None, query: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        kinds = _LIST_KINDS.get(resource)
        if kinds is None:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource {resource}")
        if query.get("watch") in ("true", "1"):
            return 200, {"watch": _WatchRequest(resource, namespace, query)}
        with self._lock:
            items = [
                json.loads(json.dumps(obj))
                for (ns, _), obj in sorted(self.objects.get(resource, {}).items())
                if namespace is None or ns == namespace
            ]
            resource_version = str(self._resource_version)
        offset = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = items[offset : offset + limit] if limit else items[offset:]
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if limit and offset + limit < len(items):
            metadata["continue"] = str(offset + limit)
        return 200, {"apiVersion": kinds[0], "kind": kinds[1], "metadata": metadata, "items": page}

    def _serve_watch(self, handler: http.server.BaseHTTPRequestHandler, request: _WatchRequest) -> None:
        """Stream the changes after the requested version as chunked JSON lines until the timeout."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(line: dict[str, Any]) -> None:
            data = json.dumps(line).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        deadline = time.monotonic() + request.timeout_s
        sent_up_to = request.resource_version
        with self._lock:
            self.watch_requests += 1
            self._open_watches.add(handler.connection)
            expired = sent_up_to < self._oldest_replayable
            current: list[dict[str, Any]] = []
            if sent_up_to == 0:  # "any version": the current objects as ADDED, then the changes after them
                expired = False
                current = [json.loads(json.dumps(o)) for o in self.objects.get(request.resource, {}).values()]
                current = [o for o in current if request.matches(o)]
                sent_up_to = self._resource_version
        try:
            for obj in current:
                send({"type": "ADDED", "object": obj})
            if expired:
                message = f"too old resource version: {sent_up_to} ({self._oldest_replayable})"
                send({"type": "ERROR", "object": _status(410, "Expired", message)})
            while not expired:
                with self._lock:
                    pending = [
                        (rv, event, obj)
                        for rv, resource, event, obj in self._history
                        if rv > sent_up_to and resource == request.resource and request.matches(obj)
                    ]
                    sent_up_to = max([sent_up_to, *(rv for rv, _, _ in pending)]) if pending else self._resource_version
                    remaining = deadline - time.monotonic()
                    if not pending:
                        if self._closing or remaining <= 0:
                            break
                        self._changed.wait(min(remaining, 0.5))
                        continue
                for _, event, obj in pending:
                    send({"type": event, "object": obj})
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the client went away, or go_away() cut the stream
        finally:
            with self._lock:
                self._open_watches.discard(handler.connection)
            handler.close_connection = True

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body = fake._answer(self.command, self.path, self.headers.get("Authorization"))
                if isinstance(body.get("watch"), _WatchRequest):
                    fake._serve_watch(self, body["watch"])
                    return
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve
            do_PATCH = _serve
            do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


class _WatchRequest:
    """A parsed ``?watch=true`` request."""

    def __init__(self, resource: tuple[str, str, str], namespace: str | None, query: Mapping[str, str]) -> None:
        self.resource = resource
        self.namespace = namespace
        self.resource_version = int(query.get("resourceVersion") or 0)
        self.timeout_s = min(float(query.get("timeoutSeconds") or 1800), 1800.0)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return self.namespace is None or obj["metadata"]["namespace"] == self.namespace
