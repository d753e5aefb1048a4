"""VM CPU and memory from Azure Monitor platform metrics, through the batch metrics API.

Every Azure VM has ``Percentage CPU`` and (on current hosts) ``Available Memory Bytes`` without an agent. They
are read with ``azure-monitor-querymetrics``' ``MetricsClient.query_resources`` (``POST
https://<region>.metrics.monitor.azure.com/subscriptions/<sub>/metrics:getBatch``), which takes up to 50
resources of one subscription and region per call: 100,000 VMs are ~2,000 calls, not 200,000.

- VMs are grouped by (subscription, region) into batches of ``azure_monitor.batch_size`` (<= 50); a lookback
  longer than ``azure_monitor.max_points_per_call`` points per series is split in time (the API does not page).
- Batches run on ``azure_monitor.concurrency`` threads; throttling (429, ``Retry-After`` in seconds or as an
  HTTP-date) and server errors are retried by :func:`rightsizer.azure.retry.call_with_retries`, bounded.
- One failed batch, one resource the service answered with an error, or one VM with too little data is a
  :class:`~rightsizer.metrics.NoUsage` with its reason: never the end of the run.
- Memory percent = 100 x (1 - available bytes / the size's memory from the catalogue). A VM with no memory
  data is "memory unknown"; it is sized on CPU alone (keeping at least its current memory) only when
  ``metrics.size_without_memory`` is true, otherwise skipped with that reason.
- Scale sets are read per instance, never as the scale set's aggregate (an average across instances hides the hot
  one): flexible scale sets' instances are VMs with their own resource ids; instances of uniform scale sets are
  metrics resources of type ``Microsoft.Compute/virtualMachineScaleSets/virtualMachines`` (same metric names),
  batched apart from plain VMs since one call covers one resource type.

The answer is streamed and read as the service's JSON (``stream=True`` and the client's ``cls`` hook) rather than
as the client's ``MetricsQueryResult`` objects, for three reasons: those objects drop each metric's
``errorCode`` and the resource id (needed for partial failures); the client's model layer costs ~70 us per
point before any hook runs (10,000 VMs x 14 days at 5 minutes are 80 M points: over an hour of CPU); and a
streamed body can be bounded (``azure_monitor.max_response_mb``) before it is held in memory. Answers are
decoded one at a time (calls stay concurrent) and each series becomes two arrays at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import structlog

from rightsizer.azure.errors import AzureError
from rightsizer.azure.retry import RetrySettings, call_with_retries
from rightsizer.domain import VmInfo
from rightsizer.inputs import FloatArray
from rightsizer.metrics import NoUsage, Usage, VmUsage, apply_memory_policy, usage_from_samples
from rightsizer.quoting import cut
from rightsizer.settings import DAY_S, AzureMonitorSettings, MetricsSettings
from rightsizer.sources.azure_monitor_answer import (
    AGGREGATION,
    CPU_METRIC,
    MEMORY_METRIC,
    Samples,
    StreamedBody,
    collect,
)
from rightsizer.sources.azure_monitor_batches import Batch, endpoint_for, plan_batches, time_chunks

log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)

GIB = 1024.0**3


class MetricsBatchClient(Protocol):
    """The part of ``azure.monitor.querymetrics.MetricsClient`` used here."""

    def query_resources(
        self,
        *,
        resource_ids: Sequence[str],
        metric_namespace: str,
        metric_names: Sequence[str],
        timespan: tuple[datetime, datetime],
        granularity: timedelta,
        aggregations: Sequence[str],
        **kwargs: Any,
    ) -> Any: ...


ClientFactory = Callable[[str], MetricsBatchClient]
"""Regional endpoint URL -> client (one per endpoint, shared by the threads: azure-core clients are thread-safe)."""


@dataclass
class FetchStats:
    """What a fetch cost: calls made (including retried ones), batches that failed, retries."""

    calls: int = 0
    batches: int = 0
    failed_batches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_call(self) -> None:
        with self.lock:
            self.calls += 1


class AzureMonitorSource:
    """Reads VM usage from Azure Monitor; ``usage()`` returns one :data:`Usage` per VM id."""

    def __init__(
        self,
        settings: AzureMonitorSettings,
        metrics: MetricsSettings,
        client_factory: ClientFactory,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._client_factory = client_factory
        self._clients: dict[str, MetricsBatchClient] = {}
        self._lock = threading.Lock()
        self._sleep = sleep
        self._clock = clock
        self.retry = RetrySettings(
            max_attempts=settings.max_attempts,
            backoff_base_s=settings.backoff_base_s,
            max_delay_s=settings.max_retry_delay_s,
        )
        self.stats = FetchStats()
        self._decode_lock = threading.Lock()

    def _client(self, region: str) -> MetricsBatchClient:
        endpoint = endpoint_for(self.settings.endpoint, region)
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = self._client_factory(endpoint)
                self._clients[endpoint] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                close = getattr(client, "close", None)
                if close is not None:
                    close()
            self._clients.clear()

    @property
    def granularity_s(self) -> float:
        return self.settings.granularity_s or self.metrics.step_s

    def usage(
        self,
        vms: Sequence[VmInfo],
        memory_bytes: Callable[[VmInfo], float | None],
        now: float,
        *,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> dict[str, Usage]:
        """Usage per VM id for every VM in ``vms`` (skips included, with their reason)."""
        batches, refused = plan_batches(vms, self.settings.batch_size)
        out: dict[str, Usage] = dict(refused)
        self.stats.batches += len(batches)
        grain = self.granularity_s
        end = math.floor(now / grain) * grain + grain
        start = end - self.metrics.lookback_days * DAY_S
        windows = time_chunks(start, end, grain, self.settings.max_points_per_call)
        log.info("azure_monitor.fetch", vms=len(vms), batches=len(batches), windows=len(windows), granularity_s=grain)

        def run(batch: Batch) -> dict[str, Usage]:
            result = self._batch_usage(batch, windows, memory_bytes, now)
            if on_batch is not None:
                on_batch(batch)
            return result

        workers = max(1, min(self.settings.concurrency, len(batches)))
        if workers == 1:
            for batch in batches:
                out.update(run(batch))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azure-monitor") as pool:
                for result in pool.map(run, batches):
                    out.update(result)
        return {vm.id: out[vm.id] for vm in vms}

    def _query(self, batch: Batch, window: tuple[float, float]) -> Any:
        client = self._client(batch.region)
        capture = StreamedBody(int(self.settings.max_response_mb * 1e6))
        t0, t1 = window

        def call() -> None:
            self.stats.count_call()
            client.query_resources(
                resource_ids=[vm.id for vm in batch.vms],
                metric_namespace=batch.namespace,
                metric_names=[CPU_METRIC, MEMORY_METRIC],
                timespan=(datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC)),
                granularity=timedelta(seconds=self.granularity_s),
                aggregations=[AGGREGATION],
                stream=True,
                cls=capture,
            )

        call_with_retries(
            "metrics.query_resources",
            call,
            retry=self.retry,
            sleep=self._sleep,
            clock=self._clock,
            subscription=batch.subscription,
            region=batch.region,
            resources=len(batch.vms),
        )
        return capture.raw

    def _batch_usage(
        self,
        batch: Batch,
        windows: Sequence[tuple[float, float]],
        memory_bytes: Callable[[VmInfo], float | None],
        now: float,
    ) -> dict[str, Usage]:
        samples = {vm.id.lower(): Samples() for vm in batch.vms}
        for window in windows:
            try:
                doc = self._query(batch, window)
            except AzureError as exc:
                with self.stats.lock:
                    self.stats.failed_batches += 1
                status = f"HTTP {exc.status} " if exc.status else ""
                reason = cut(
                    f"Azure Monitor query failed for this VM's batch ({batch.region}, {len(batch.vms)} VMs): "
                    f"{status}{exc.code or 'error'}: {exc.message}"
                )
                log.warning("azure_monitor.batch_failed", region=batch.region, vms=len(batch.vms), error=str(exc))
                return {vm.id: NoUsage(vm.id, reason) for vm in batch.vms}
            # Decoding is CPU work under the GIL: one answer at a time gains nothing in speed to lose in memory
            # (a 50-VM answer of 14 days is ~400k points, ~130 MB as Python objects while it is read).
            with self._decode_lock:
                try:
                    parsed = json.loads(doc)
                except ValueError as exc:
                    with self.stats.lock:
                        self.stats.failed_batches += 1
                    reason = cut(f"Azure Monitor's answer for this VM's batch is not JSON: {exc}")
                    return {vm.id: NoUsage(vm.id, reason) for vm in batch.vms}
                finally:
                    del doc
                collect(parsed, samples)
                del parsed
        return {vm.id: self._usage_of(vm, samples[vm.id.lower()], memory_bytes, now) for vm in batch.vms}

    def _usage_of(self, vm: VmInfo, s: Samples, memory_bytes: Callable[[VmInfo], float | None], now: float) -> Usage:
        if s.error is not None:
            return NoUsage(vm.id, f"Azure Monitor answered {CPU_METRIC!r} with {s.error}")
        if not s.timestamps:
            return NoUsage(
                vm.id, f"no {CPU_METRIC!r} data from Azure Monitor in the last {self.metrics.lookback_days:g} days"
            )
        ts = np.concatenate(s.timestamps)
        cpu = np.concatenate(s.cpu)
        keep = np.isfinite(ts) & np.isfinite(cpu)
        total = memory_bytes(vm)
        memory: FloatArray | None = None
        note = ""
        if s.memory_error is not None:
            note = f"memory unknown: Azure Monitor answered {MEMORY_METRIC!r} with {s.memory_error}"
        elif total is None or total <= 0:
            note = f"memory unknown: size {vm.size} is not in the catalogue (its memory is needed for a percentage)"
        elif s.memory:
            mts = np.concatenate(s.memory_ts)
            available = np.concatenate(s.memory)
            percent = np.clip(100.0 * (1.0 - available / total), 0.0, 100.0)
            memory = _align(ts, mts, percent)
            if not np.any(np.isfinite(memory)):
                memory = None
        if memory is None and not note:
            note = f"memory unknown: no {MEMORY_METRIC!r} data from Azure Monitor"
        usage = usage_from_samples(
            vm.id, ts[keep], cpu[keep], None if memory is None else memory[keep], self.metrics, now
        )
        if isinstance(usage, VmUsage) and usage.memory is None and note:
            usage = dataclasses.replace(usage, memory=None, memory_note=note)
        return apply_memory_policy(usage, allow_cpu_only=self.metrics.size_without_memory)


def _align(ts: FloatArray, other_ts: FloatArray, other: FloatArray) -> FloatArray:
    """``other`` at the timestamps ``ts`` (NaN where it has no point); both come from the same grid."""
    out = np.full(len(ts), np.nan)
    if len(other_ts) == 0 or len(ts) == 0:
        return out
    order = np.argsort(other_ts, kind="stable")
    sorted_ts = other_ts[order]
    pos = np.clip(np.searchsorted(sorted_ts, ts), 0, len(sorted_ts) - 1)
    hit = sorted_ts[pos] == ts
    out[hit] = other[order][pos[hit]]
    return out


def metrics_client_factory(credential: Any, settings: AzureMonitorSettings, **client_kwargs: Any) -> ClientFactory:
    """Production: a ``MetricsClient`` per regional endpoint, SDK retries off (one retry policy: ours)."""
    from azure.monitor.querymetrics import MetricsClient

    def make(endpoint: str) -> MetricsBatchClient:
        kwargs: dict[str, Any] = {
            "audience": settings.audience,
            "retry_total": 0,
            "connection_timeout": settings.timeout_s,
            "read_timeout": settings.timeout_s,
            **client_kwargs,
        }
        client: MetricsBatchClient = MetricsClient(endpoint, credential, **kwargs)
        return client

    return make
