"""A fake Azure Monitor metrics data-plane API (``metrics:getBatch``, api-version 2024-02-01) over HTTPS on loopback.

The real ``azure-monitor-querymetrics`` client talks to it unchanged: its regional endpoint is
``FakeAzureMonitor.endpoint(region)`` (``https://127.0.0.1:PORT/<region>``: the region is the first path segment,
so one fake serves every region and can check that a batch's resources are in the endpoint's region, as Azure
does), with :class:`~tests.fakes.arm.FakeCredential` and ``connection_verify=FakeAzureMonitor.cert_path``.

What it checks, as the service does: a bearer token; ``POST /<region>/subscriptions/<sub>/metrics:getBatch``;
``api-version=2024-02-01``; ``metricnamespace``; ``metricnames`` (comma-separated); ``starttime``/``endtime``
(ISO 8601); ``interval`` (one of Azure's time grains); ``aggregation``; a JSON body ``{"resourceids": [...]}``
of 1-50 ids, all in the path's subscription and the endpoint's region (400 otherwise).

What it answers: one ``values`` item per resource (``starttime``, ``endtime``, ``interval``, ``namespace``,
``resourceregion``, ``resourceid``, ``value``: one metric each with ``id``, ``name``, ``unit``, ``errorCode``,
``timeseries[0].data[]`` of ``{"timeStamp", "<aggregation>": value}``). Values are generated, not stored:
a deterministic function of the resource id and the time (daily wave + hashed noise), so 10,000 VMs x 14 days
cost nothing to hold and every chunked or repeated query sees the same numbers.

Per-VM behaviour (:class:`FakeMonitoredVm`): CPU level, memory size and used fraction, no memory metric (points
without a value, as Azure returns for a metric that has no data), a metric-level error (``errorCode`` other than
``Success``, the batch's other resources unaffected), or missing points.

Faults (:class:`MonitorFault`): the next ``times`` calls answer ``status`` (429 with ``Retry-After`` in either
form, 500, 503, ...). Every call is recorded (:attr:`FakeAzureMonitor.calls`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from tests.fakes.arm import FAKE_TOKEN
from tests.fakes.tls import FakeApiHandler, LoopbackHttps

API_VERSION = "2024-02-01"
NAMESPACES = {
    "microsoft.compute/virtualmachines": re.compile(r"/providers/Microsoft\.Compute/virtualMachines/[^/]+$", re.I),
    "microsoft.compute/virtualmachinescalesets/virtualmachines": re.compile(
        r"/providers/Microsoft\.Compute/virtualMachineScaleSets/[^/]+/virtualMachines/[^/]+$", re.I
    ),
}
"""Namespaces served, and the resource ids of each type (a batch's resources must all be of its namespace)."""
GRAINS = {"PT1M": 60, "PT5M": 300, "PT15M": 900, "PT30M": 1800, "PT1H": 3600, "PT6H": 21600, "PT12H": 43200}
UNITS = {"Percentage CPU": "Percent", "Available Memory Bytes": "Bytes"}
DAY_S = 86_400.0
GIB = 1024.0**3


@dataclass
class FakeMonitoredVm:
    resource_id: str
    region: str
    cpu_percent: float = 20.0
    """Mean CPU; the series is a daily wave of +-50 % of it plus hashed noise, clipped to [0, 100]."""
    memory_gib: float = 16.0
    memory_used_fraction: float = 0.4
    has_memory_metric: bool = True
    error_code: str | None = None
    """A metric-level error for this resource (e.g. ``ResourceNotFound``): the batch's others are answered."""
    missing_every: int = 0
    """Every n-th point has no value (0 = none missing)."""


@dataclass
class MonitorFault:
    status: int
    times: int = 1
    retry_after: str | None = None
    code: str = "TooManyRequests"
    message: str = "injected fault"


@dataclass(frozen=True)
class RecordedCall:
    region: str
    subscription: str
    resource_ids: tuple[str, ...]
    query: Mapping[str, list[str]]
    status: int


@dataclass
class _Grid:
    """The time stamps of one answer, formatted once per call and shared by its series."""

    epochs: np.ndarray
    texts: list[str] = field(default_factory=list)


class FakeAzureMonitor:
    """Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, *, accept_any: bool = False) -> None:
        # True: answer for any VM resource id, with a CPU level and memory use derived from the id (a benchmark's
        # 10,000 VMs need no registration). False: an unknown resource gets a ``ResourceNotFound`` metric error.
        self.accept_any = accept_any
        self.vms: dict[str, FakeMonitoredVm] = {}
        self.faults: list[MonitorFault] = []
        self.calls: list[RecordedCall] = []
        self.lock = threading.Lock()
        self._https = LoopbackHttps("fake-azure-monitor")
        self.cert_path = self._https.cert_path
        self.url = ""

    def start(self) -> FakeAzureMonitor:
        self.url = self._https.start(_make_handler(self))
        return self

    def stop(self) -> None:
        self._https.stop()

    def __enter__(self) -> FakeAzureMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_template(self) -> str:
        """For ``azure_monitor.endpoint``: ``{region}`` is replaced per batch."""
        return self.url + "/{region}"

    def endpoint(self, region: str) -> str:
        return f"{self.url}/{region}"

    def add_vm(self, resource_id: str, region: str, **kw: Any) -> FakeMonitoredVm:
        vm = FakeMonitoredVm(resource_id, region, **kw)
        with self.lock:
            self.vms[resource_id.lower()] = vm
        return vm

    def add_fault(self, fault: MonitorFault) -> MonitorFault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def successful_calls(self) -> list[RecordedCall]:
        with self.lock:
            return [c for c in self.calls if c.status == 200]

    # -- data ----------------------------------------------------------------------------------------------------

    def series(self, vm: FakeMonitoredVm, metric: str, epochs: np.ndarray) -> np.ndarray:
        """The metric's values at ``epochs`` (NaN where there is no value)."""
        seed = zlib.crc32(vm.resource_id.lower().encode())
        index = (epochs // 60).astype(np.uint64)
        noise = ((index * np.uint64(2654435761) + np.uint64(seed)) % np.uint64(1000)).astype(np.float64) / 1000.0
        phase = (seed % 360) * np.pi / 180
        wave = np.sin(2 * np.pi * epochs / DAY_S + phase)
        if metric == "Percentage CPU":
            values = np.clip(vm.cpu_percent * (1 + 0.5 * wave + 0.2 * (noise - 0.5)), 0.0, 100.0)
        elif metric == "Available Memory Bytes":
            if not vm.has_memory_metric:
                return np.full(len(epochs), np.nan)
            used = np.clip(vm.memory_used_fraction * (1 + 0.1 * wave + 0.05 * (noise - 0.5)), 0.0, 1.0)
            values = np.round((1 - used) * vm.memory_gib * GIB)
        else:
            return np.full(len(epochs), np.nan)
        if vm.missing_every > 0:
            values = values.copy()
            values[(index % np.uint64(vm.missing_every)) == 0] = np.nan
        return values


_PATH = re.compile(r"^/(?P<region>[a-z0-9]+)/subscriptions/(?P<sub>[^/]+)/metrics:getBatch$")


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _make_handler(monitor: FakeAzureMonitor) -> type[BaseHTTPRequestHandler]:
    class Handler(FakeApiHandler):
        def do_GET(self) -> None:
            self._error(405, "MethodNotAllowed", "getBatch is POST only", {})

        def do_POST(self) -> None:
            split = urlsplit(self.path)
            query = parse_qs(split.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Authorization") != f"Bearer {FAKE_TOKEN}":
                self._error(401, "InvalidAuthenticationToken", "missing or bad token", {})
                return
            match = _PATH.match(split.path)
            region = match["region"] if match else ""
            subscription = match["sub"] if match else ""
            try:
                ids = self._resource_ids(raw)
            except _BadRequest:
                ids = ()
            with monitor.lock:
                fault = next((f for f in monitor.faults if f.times > 0), None)
                if fault is not None:
                    fault.times -= 1
            if fault is not None:
                monitor.calls.append(RecordedCall(region, subscription, ids, query, fault.status))
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._error(fault.status, fault.code, fault.message, headers)
                return
            try:
                if match is None:
                    raise _BadRequest(404, "NotFound", f"no route for POST {split.path}")
                body = self._answer(region, subscription, ids, query)
            except _BadRequest as bad:
                with monitor.lock:
                    monitor.calls.append(RecordedCall(region, subscription, ids, query, bad.status))
                self._error(bad.status, bad.code, bad.message, {})
                return
            with monitor.lock:
                monitor.calls.append(RecordedCall(region, subscription, ids, query, 200))
            self._send(200, body, {})

        def _resource_ids(self, raw: bytes) -> tuple[str, ...]:
            try:
                doc = json.loads(raw)
            except ValueError:
                raise _BadRequest(400, "BadRequest", "body is not JSON") from None
            ids = doc.get("resourceids") if isinstance(doc, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise _BadRequest(400, "BadRequest", "body must be {'resourceids': [...]}")
            return tuple(ids)

        def _answer(
            self, region: str, subscription: str, ids: tuple[str, ...], query: Mapping[str, list[str]]
        ) -> bytes:
            def one(name: str) -> str:
                values = query.get(name)
                if not values:
                    raise _BadRequest(400, "BadRequest", f"query parameter {name} is required")
                return values[0]

            if one("api-version") != API_VERSION:
                raise _BadRequest(400, "InvalidApiVersion", f"api-version {one('api-version')} not supported")
            namespace = one("metricnamespace")
            id_pattern = NAMESPACES.get(namespace.lower())
            if id_pattern is None:
                raise _BadRequest(400, "BadRequest", f"metricnamespace {namespace} not supported")
            if not ids or len(ids) > 50:
                raise _BadRequest(400, "BadRequest", f"{len(ids)} resource ids; 1 to 50 are accepted")
            grain = one("interval")
            if grain not in GRAINS:
                raise _BadRequest(400, "BadRequest", f"interval {grain} is not a supported time grain")
            step = GRAINS[grain]
            start, end = _parse_time(one("starttime")), _parse_time(one("endtime"))
            if end <= start:
                raise _BadRequest(400, "BadRequest", "endtime must be after starttime")
            names = one("metricnames").split(",")
            aggregations = [a.strip().lower() for a in one("aggregation").split(",")]
            vms: list[FakeMonitoredVm | None] = []
            for rid in ids:
                parts = rid.split("/")
                if len(parts) < 3 or parts[2].lower() != subscription.lower():
                    raise _BadRequest(400, "BadRequest", f"resource {rid} is not in subscription {subscription}")
                if not id_pattern.search(rid):
                    raise _BadRequest(400, "BadRequest", f"resource {rid} is not of type {namespace}")
                vm = monitor.vms.get(rid.lower())
                if vm is None and monitor.accept_any:
                    seed = zlib.crc32(rid.lower().encode())
                    vm = FakeMonitoredVm(
                        rid, region, cpu_percent=2.0 + seed % 60, memory_used_fraction=0.1 + seed % 7 / 10
                    )
                if vm is not None and vm.region != region:
                    raise _BadRequest(400, "BadRequest", f"resource {rid} is in {vm.region}, not {region}")
                vms.append(vm)
            first = -(-start // step) * step
            epochs = np.arange(first, end, step, dtype=np.float64)
            grid = _Grid(epochs, [_iso(t) for t in epochs])
            items = [
                self._item(rid, vm, region, namespace, names, aggregations, grid, start, end, grain)
                for rid, vm in zip(ids, vms, strict=True)
            ]
            return ('{"values":[' + ",".join(items) + "]}").encode()

        def _item(
            self,
            rid: str,
            vm: FakeMonitoredVm | None,
            region: str,
            namespace: str,
            names: list[str],
            aggregations: list[str],
            grid: _Grid,
            start: float,
            end: float,
            grain: str,
        ) -> str:
            metrics = []
            for name in names:
                head: dict[str, Any] = {
                    "id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": name, "localizedValue": name},
                    "displayDescription": f"fake {name}",
                    "unit": UNITS.get(name, "Unspecified"),
                }
                if vm is None or vm.error_code is not None:
                    head["errorCode"] = "ResourceNotFound" if vm is None else vm.error_code
                    head["errorMessage"] = f"no metrics for {rid}"
                    head["timeseries"] = []
                    metrics.append(json.dumps(head))
                    continue
                head["errorCode"] = "Success"
                values = monitor.series(vm, name, grid.epochs)
                points = []
                for text, value in zip(grid.texts, values.tolist(), strict=True):
                    if value != value:  # NaN: a point without a value
                        points.append(f'{{"timeStamp":"{text}"}}')
                    else:
                        fields = ",".join(
                            f'"{a}":{value:.6g}' if value < 1e6 else f'"{a}":{value:.0f}' for a in aggregations
                        )
                        points.append(f'{{"timeStamp":"{text}",{fields}}}')
                head_json = json.dumps(head)[:-1]
                metrics.append(head_json + ',"timeseries":[{"metadatavalues":[],"data":[' + ",".join(points) + "]}]}")
            return (
                f'{{"starttime":"{_iso(start)}","endtime":"{_iso(end)}","interval":"{grain}",'
                f'"namespace":{json.dumps(namespace)},"resourceregion":"{region}",'
                f'"resourceid":{json.dumps(rid)},"value":[' + ",".join(metrics) + "]}"
            )

        def _error(self, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
            self._send(status, json.dumps({"error": {"code": code, "message": message}}).encode(), headers)

        def _send(self, status: int, payload: bytes, headers: Mapping[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler
