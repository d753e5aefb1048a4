"""A small client that calls the scaler exactly as KEDA does: GetMetricSpec, GetMetrics with the returned
name, then IsActive, all three under one 3 s deadline (KEDA's HPA path)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc

KEDA_DEADLINE_S = 3.0


@dataclass(frozen=True, slots=True)
class KedaAnswer:
    metric_name: str
    target_size: int
    target_size_float: float
    value: int
    value_float: float
    active: bool


def channel(
    address: str,
    *,
    ca_cert: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """Plaintext h2c, or TLS when a CA is given (mutual TLS when a client certificate is given too)."""
    if ca_cert is None:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_cert.read_bytes(),
        private_key=None if client_key is None else client_key.read_bytes(),
        certificate_chain=None if client_cert is None else client_cert.read_bytes(),
    )
    options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
    return grpc.secure_channel(address, credentials, options=options)


class ScalerClient:
    def __init__(self, chan: grpc.Channel) -> None:
        self.channel = chan
        self.stub = pb_grpc.ExternalScalerStub(chan)  # type: ignore[no-untyped-call]

    @staticmethod
    def ref(namespace: str, name: str, metadata: Mapping[str, str]) -> Any:
        return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=dict(metadata))

    def keda_poll(
        self, namespace: str, name: str, metadata: Mapping[str, str], *, deadline_s: float = KEDA_DEADLINE_S
    ) -> KedaAnswer:
        """KEDA's sequence; raises grpc.RpcError on any error status, like KEDA counts a failure."""
        ref = self.ref(namespace, name, metadata)
        end = time.monotonic() + deadline_s
        spec = self.stub.GetMetricSpec(ref, timeout=max(0.001, end - time.monotonic()))
        if len(spec.metricSpecs) == 0:
            raise ValueError("GetMetricSpec returned no metric spec (KEDA counts this as an error)")
        ms = spec.metricSpecs[0]
        metrics = self.stub.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=ref, metricName=ms.metricName),
            timeout=max(0.001, end - time.monotonic()),
        )
        if len(metrics.metricValues) != 1:
            raise ValueError(f"GetMetrics returned {len(metrics.metricValues)} values; KEDA's HPA sums them")
        mv = metrics.metricValues[0]
        active = self.stub.IsActive(ref, timeout=max(0.001, end - time.monotonic()))
        return KedaAnswer(
            metric_name=ms.metricName,
            target_size=int(ms.targetSize),
            target_size_float=float(ms.targetSizeFloat),
            value=int(mv.metricValue),
            value_float=float(mv.metricValueFloat),
            active=bool(active.result),
        )

    def stream_is_active(
        self, namespace: str, name: str, metadata: Mapping[str, str], *, timeout: float | None = None
    ) -> Iterator[bool]:
        for response in self.stub.StreamIsActive(self.ref(namespace, name, metadata), timeout=timeout):
            yield bool(response.result)

    def close(self) -> None:
        self.channel.close()


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    """``key=value`` pairs from the command line (the value may contain '=')."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"metadata must be key=value, got {pair!r}")
        out[key] = value
    return out


MAX_WHY_BYTES = 4 * 1024 * 1024
"""A /forecast page larger than this is not read (the scaler pages it; this bounds a wrong address)."""


def served_why(http_address: str, namespace: str, name: str, metric: str, *, timeout_s: float = 3.0) -> str:
    """Why the scaler serves what it serves for one trigger, from its /forecast view (one line)."""
    query = urllib.parse.urlencode({"namespace": namespace, "name": name})
    with urllib.request.urlopen(f"http://{http_address}/forecast?{query}", timeout=timeout_s) as resp:
        body = resp.read(MAX_WHY_BYTES + 1)
    if len(body) > MAX_WHY_BYTES:
        raise OSError(f"/forecast answered more than {MAX_WHY_BYTES} bytes")
    try:
        docs = json.loads(body)["scaledObjects"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OSError(f"/forecast did not answer the scaler's JSON: {exc}") from None
    for doc in docs:
        if doc.get("metric") == metric:
            served = doc.get("served") or {}
            if "error" in served:
                return f"error: {served['error']}"
            model = doc.get("model") or {}
            confidence = served.get("confidence")
            return (
                f"{served.get('reason')} (mode {doc.get('mode')}, model {model.get('name', 'none')}, confidence "
                f"{'-' if confidence is None else f'{confidence:.2f}'}): {served.get('why')}"
            )
    return f"no trigger {metric} of {namespace}/{name} in /forecast (is --http-address this scaler's?)"


__all__ = ["KEDA_DEADLINE_S", "KedaAnswer", "ScalerClient", "channel", "parse_metadata", "served_why"]
