"""``python -m scaler_service demo``: the scaler on the replay source, real traces, real gRPC, real fits.

Starts the service in-process on free loopback ports, registers a few ScaledObjects on bundled traces
through the same client KEDA's calls are modelled on, waits (bounded) for their first fits, and prints what
is served and why.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

import grpc

from scaler_service.client import ScalerClient, channel
from scaler_service.http_api import forecast_view
from scaler_service.server import ScalerServer
from scaler_service.settings import Settings


@dataclass(frozen=True, slots=True)
class DemoObject:
    name: str
    metadata: dict[str, str]
    about: str


NAMESPACE = "demo"
OBJECTS = (
    DemoObject(
        "web-frontend",
        {
            "query": "nasa-http-1995",
            "threshold": "30",
            "queryStep": "1m",
            "historyTimeWindow": "7d",
            "predictHorizon": "10m",
            "activationThreshold": "1",
        },
        "NASA web server 1995, requests/min; one replica serves 30/min",
    ),
    DemoObject(
        "web-frontend-dry-run",
        {
            "query": "nasa-http-1995",
            "threshold": "30",
            "queryStep": "1m",
            "historyTimeWindow": "7d",
            "predictHorizon": "10m",
            "mode": "observe",
        },
        "the same series in observe mode (shares the model)",
    ),
    DemoObject(
        "taxi-dispatch",
        {
            "query": "nyc-taxi",
            "threshold": "5000",
            "queryStep": "30m",
            "historyTimeWindow": "14d",
            "predictHorizon": "1h",
        },
        "NYC taxi passengers per 30 min; one replica serves 5000",
    ),
)


def _fmt(x: object, digits: int = 1) -> str:
    if isinstance(x, int | float) and math.isfinite(x):
        return f"{x:.{digits}f}"
    return "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


KEEP_GRPC_PORT = 9090
KEEP_HTTP_PORT = 8080


def _python() -> str:
    """This interpreter (the virtualenv's), so the printed commands work outside an activated venv."""
    return shlex.quote(sys.executable or "python3")


def _query_command(port: int, http_port: int, obj: DemoObject) -> str:
    pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in obj.metadata.items())
    return (
        f"{_python()} -m scaler_service query --address 127.0.0.1:{port} --http-address 127.0.0.1:{http_port} "
        f"--namespace {NAMESPACE} "
        f"--name {obj.name} --metadata {pairs}"
    )


def run_demo(args: argparse.Namespace) -> int:
    settings = Settings(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        bind_address="127.0.0.1",
        source="replay",
        kube_annotations=False,
        grace_period_s=2.0,
    )
    server = ScalerServer(settings)
    server.start()
    out = sys.stdout
    print(
        f"Foresight scaler serving gRPC on 127.0.0.1:{server.grpc_port}, "
        f"HTTP on 127.0.0.1:{server.http_port} "
        "(replay source: bundled real traces played against the wall clock)",
        file=out,
    )
    client = ScalerClient(channel(f"127.0.0.1:{server.grpc_port}"))
    try:
        print(
            "\nRegistering ScaledObjects with KEDA's call sequence (GetMetricSpec, GetMetrics, IsActive):",
            file=out,
        )
        for obj in OBJECTS:
            answer = client.keda_poll(NAMESPACE, obj.name, obj.metadata)
            print(
                f"  {NAMESPACE}/{obj.name}: metric {answer.metric_name}, "
                f"target {answer.target_size_float:g}, "
                f"first answer {answer.value_float:.1f} (observed; no model yet) - {obj.about}",
                file=out,
            )

        keys = {server.parser.parse(o.metadata).series_key.id for o in OBJECTS}
        started = time.monotonic()
        last_print = 0.0
        print(
            f"\nWaiting for the first fits of {len(keys)} series (at most {args.fit_timeout_s:.0f} s)...",
            file=out,
            flush=True,
        )
        while True:
            statuses = {k: server.cache.status(k) for k in keys}
            done = {k for k, s in statuses.items() if s is not None and (s.has_model or s.last_error is not None)}
            elapsed = time.monotonic() - started
            if done == keys or elapsed > args.fit_timeout_s:
                break
            if elapsed - last_print >= 10:
                last_print = elapsed
                print(f"  {len(done)}/{len(keys)} fitted after {elapsed:.0f} s", file=out, flush=True)
            time.sleep(0.5)
        print(f"  {len(done)}/{len(keys)} fitted after {time.monotonic() - started:.0f} s", file=out)

        rows: list[list[str]] = []
        for obj in OBJECTS:
            try:
                client.keda_poll(NAMESPACE, obj.name, obj.metadata)
            except grpc.RpcError as exc:
                print(f"  {obj.name}: {exc.code().name}: {exc.details()}", file=out)
        view = forecast_view(server.engine, server.cache, now=time.time())
        reasons: list[str] = []
        for doc in view:
            served = doc.get("served", {})
            model = doc.get("model") or {}
            fit_error = (doc.get("fitting") or {}).get("last_error")
            rows.append(
                [
                    f"{doc['namespace']}/{doc['name']}",
                    doc["mode"],
                    _fmt(served.get("observed")),
                    _fmt(served.get("predictive_value")),
                    _fmt(served.get("value")),
                    str(served.get("replicas_wanted", "-")),
                    str(model.get("name", "none")),
                    _fmt(served.get("confidence"), 2),
                    str(served.get("reason", served.get("error", "-"))),
                ]
            )
            reasons.append(
                f"  {doc['name']}: {served.get('why', served.get('error', ''))}"
                + (f" [last fit error: {fit_error}]" if fit_error and not model else "")
            )
        print(
            "\nWhat the scaler serves now (forecast peak = max over now..now+predictHorizon, level-anchored):",
            file=out,
        )
        print(
            _table(
                rows,
                [
                    "scaledobject",
                    "mode",
                    "observed",
                    "forecast peak",
                    "served",
                    "replicas",
                    "model",
                    "confidence",
                    "reason",
                ],
            ),
            file=out,
        )
        print("\nWhy:", file=out)
        print("\n".join(reasons), file=out)
        if args.keep_running:
            base = f"http://127.0.0.1:{server.http_port}"
            print(f"\nLive view in a browser: {base}/  (JSON: {base}/forecast ; metrics: {base}/metrics)", file=out)
            print("\nQuery it by hand, exactly as KEDA does (Ctrl-C stops the demo):", file=out)
            print(f"  {_query_command(server.grpc_port, server.http_port, OBJECTS[0])}", file=out, flush=True)
        else:
            # The server stops with this command: print no address that is dead a second later.
            print(
                "\nTo see it in a browser and query it by hand, keep it running on fixed ports:\n"
                f"  {_python()} -m scaler_service demo --keep-running --grpc-port {KEEP_GRPC_PORT} "
                f"--http-port {KEEP_HTTP_PORT}\n"
                f"then open http://127.0.0.1:{KEEP_HTTP_PORT}/ and run:\n"
                f"  {_query_command(KEEP_GRPC_PORT, KEEP_HTTP_PORT, OBJECTS[0])}",
                file=out,
                flush=True,
            )
        if args.keep_running:
            received: list[int] = []

            def on_signal(signum: int, frame: FrameType | None) -> None:
                received.append(signum)  # no locks in a signal handler

            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            while not received:
                time.sleep(0.2)
    finally:
        client.close()
        server.stop()
    return 0


__all__ = ["OBJECTS", "run_demo"]
