"""Command line: ``python -m scaler_service serve | query | demo | backtest``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from forecasting.log_setup import route_stdlib_logging
from scaler_service.exit_codes import ExitCode, for_rpc_status
from scaler_service.settings import SettingsError
from scaler_service.settings_flags import add_settings_arguments, settings_from_args
from scaler_service.version import package_version

if TYPE_CHECKING:
    from scaler_service.server import ScalerServer

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing, not at configuration: a test harness (or a
    daemon) that swaps stderr must not leave the loggers writing to a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """structlog, once per process: JSON lines (or console), with the call's bound context merged in."""
    if level.lower() not in _LEVELS:
        raise SettingsError(f"log level {level!r}: expected one of {', '.join(_LEVELS)}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())  # no escape codes in files and pipes
    )
    route_stdlib_logging(renderer, _LEVELS[level.lower()], _CurrentStderr())  # type: ignore[arg-type]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def _backtest_module() -> Any | None:
    """The capacity backtest subcommand (scaler_service/backtest/cli.py), when that module is present."""
    try:
        if importlib.util.find_spec("scaler_service.backtest.cli") is None:
            return None
        return importlib.import_module("scaler_service.backtest.cli")
    except ImportError as exc:
        # A broken optional subcommand must not take serve/query/demo down with it.
        print(f"warning: the backtest subcommand is unavailable: {exc}", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scaler_service",
        description="Foresight: a KEDA external scaler that serves the forecast peak of the next minutes. "
        "Exit codes: 0 ok, 1 internal error, 2 bad input, 3 a service unreachable, 4 a check failed.",
    )
    parser.add_argument("--version", action="version", version=f"foresight-scaler {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the gRPC scaler and its HTTP port",
        description="Run the scaler. Every flag also reads FORESIGHT_<FLAG> from the environment "
        "(e.g. FORESIGHT_GRPC_PORT) and the --config YAML file; flags win over both.",
    )
    add_settings_arguments(serve)

    query = sub.add_parser("query", help="call a running scaler exactly like KEDA does and print the answers")
    query.add_argument("--address", default="127.0.0.1:9090", help="host:port of the scaler [127.0.0.1:9090]")
    query.add_argument("--namespace", default="default", help="ScaledObject namespace [default]")
    query.add_argument("--name", default="demo", help="ScaledObject name [demo]")
    query.add_argument(
        "--metadata",
        "-m",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="trigger metadata, e.g. query=nasa-http-1995 threshold=10",
    )
    query.add_argument("--ca-cert", type=Path, help="CA to verify the server (turns TLS on)")
    query.add_argument("--client-cert", type=Path, help="client certificate for mutual TLS")
    query.add_argument("--client-key", type=Path, help="client key for mutual TLS")
    query.add_argument("--server-name", help="TLS server name to expect (default: from --address)")
    query.add_argument("--deadline-s", type=float, default=3.0, help="deadline of the three calls together [3]")
    query.add_argument(
        "--http-address",
        metavar="HOST:PORT",
        help="the scaler's HTTP port: also print why the value is served (reason, mode, model, confidence)",
    )

    demo = sub.add_parser(
        "demo", help="start the scaler on the replay source, register bundled traces and show what it serves"
    )
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the table (Ctrl-C stops)")
    demo.add_argument("--grpc-port", type=int, default=0, help="gRPC port [any free one]")
    demo.add_argument("--http-port", type=int, default=0, help="HTTP port [any free one]")
    demo.add_argument("--fit-timeout-s", type=float, default=240.0, help="how long to wait for the first fits [240]")
    demo.add_argument("--log-format", choices=["json", "console"], default="console")
    demo.add_argument("--log-level", default="warning", choices=list(_LEVELS))

    backtest = _backtest_module()
    if backtest is not None:
        backtest.add_parser(sub)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    configure_logging(settings.log_format, settings.log_level)
    from scaler_service.server import ScalerServer, opt_out_from_cluster

    run_until_signalled(ScalerServer(settings, opt_out=opt_out_from_cluster(settings)))
    return 0


def run_until_signalled(server: ScalerServer) -> None:
    """Start ``server``, wait in the main thread for SIGTERM or SIGINT, then stop it (within its grace period)."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only a list append: a handler that takes a lock (Event.set, logging) can deadlock with the code it
        # interrupted in the main thread.
        received.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    while not received:
        time.sleep(0.2)
    structlog.get_logger("scaler_service").info("signal received: shutting down", signal=received[0])
    server.stop()


def _query(args: argparse.Namespace) -> int:
    from scaler_service.client import ScalerClient, channel, parse_metadata

    try:
        metadata = parse_metadata(args.metadata)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    client = ScalerClient(
        channel(
            args.address,
            ca_cert=args.ca_cert,
            client_cert=args.client_cert,
            client_key=args.client_key,
            server_name=args.server_name,
        )
    )
    try:
        answer = client.keda_poll(args.namespace, args.name, metadata, deadline_s=args.deadline_s)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return for_rpc_status(exc.code())
    finally:
        client.close()
    print(
        f"GetMetricSpec: metricName={answer.metric_name} targetSizeFloat={answer.target_size_float:g} "
        f"targetSize={answer.target_size}"
    )
    print(f"GetMetrics:    metricValueFloat={answer.value_float:.3f} metricValue={answer.value}")
    print(f"IsActive:      {str(answer.active).lower()}")
    if args.http_address:
        from scaler_service.client import served_why

        try:
            print(f"Why:           {served_why(args.http_address, args.namespace, args.name, answer.metric_name)}")
        except OSError as exc:
            print(f"error: cannot read why from http://{args.http_address}/forecast: {exc}", file=sys.stderr)
            return ExitCode.UNREACHABLE
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "query":
        return _query(args)
    if args.command == "demo":
        configure_logging(args.log_format, args.log_level)
        from scaler_service.demo import run_demo

        return run_demo(args)
    if args.command == "backtest":
        configure_logging("console", "warning")  # Prophet's and cmdstanpy's lines in our format, or silenced
        backtest = _backtest_module()
        assert backtest is not None
        return int(backtest.run(args))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
