"""``rightsizer`` command line: ``recommend`` (the default, a dry run) plus the act side's commands.

rightsizer                                   # dry run on the bundled example fleet, table output
rightsizer recommend --inventory vms.json --metrics metrics.csv --output json
rightsizer recommend --config rightsizer.yaml            # Azure inventory + Azure Monitor (or Prometheus) metrics
rightsizer recommend --config rightsizer.yaml --apply    # act on auto/approved resizes
rightsizer recommend --shard 0/4                          # this job's quarter of the fleet
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import structlog

from forecasting.progress import progress_bar, wants_progress
from rightsizer.azure.errors import AzureError, TransientAzureError
from rightsizer.catalogue import Catalogue, CatalogueError, load_catalogue, load_prices
from rightsizer.decide import recommend
from rightsizer.decide.gates import group_key
from rightsizer.domain import PowerState, Recommendation, VmInfo
from rightsizer.exit_codes import ExitCode, exit_code_for
from rightsizer.files import DEFAULT_MAX_BYTES, FileProblem
from rightsizer.inputs import load_inventory_with_as_of, load_metrics_csv, newest_sample, parse_timestamp
from rightsizer.logs import configure_logging
from rightsizer.metrics import Usage, VmUsage, usage_from_raw
from rightsizer.output import to_csv, to_json, to_table
from rightsizer.prices import PriceDataError
from rightsizer.run_metrics import DEFAULT_PUSH_TIMEOUT_S, ExportTargets, RunMetrics, export
from rightsizer.settings import Settings, SettingsError, load_settings
from rightsizer.sources.live import MonitorFactory, PrometheusFactory, SourceUnavailable, live_usage

EXAMPLE_INVENTORY = "fleet-inventory.json"
EXAMPLE_METRICS = "fleet-metrics.csv.gz"


def package_version() -> str:
    try:
        return importlib.metadata.version("foresight")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


class UsageError(ValueError):
    """Bad command-line use: the message says what to pass instead."""


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text!r}: need n >= 1 and 0 <= i < n")
    return i, n


def shard_of(vm: VmInfo, n: int) -> int:
    """Stable shard: sha256 of the VM's HA group (so a group is decided in one shard) or else of its id."""
    key = group_key(vm) or vm.id.lower()
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def in_shard(vms: Sequence[VmInfo], shard: tuple[int, int] | None) -> list[VmInfo]:
    if shard is None:
        return list(vms)
    i, n = shard
    return [vm for vm in vms if shard_of(vm, n) == i]


def _example_path(name: str) -> Path:
    return Path(str(resources.files("rightsizer") / "examples" / name))


@dataclass(frozen=True)
class Inputs:
    vms: list[VmInfo]
    usage: dict[str, Usage]
    now: float
    source: str
    gateway: Any = None
    as_of_basis: str = "the current time"
    """Why ``now`` is what it is: ``--now``, the inventory's ``as_of``, the newest sample, or the clock."""


CLOCK_SKEW_S = 3600.0
"""Samples dated more than this after the wall clock are refused (a clock or unit error)."""


def gather_inputs(
    args: argparse.Namespace,
    settings: Settings,
    *,
    gateway_factory: Callable[[], Any] | None = None,
    prometheus_factory: PrometheusFactory | None = None,
    monitor_factory: MonitorFactory | None = None,
) -> Inputs:
    """The VMs and their usage. Evaluation time: ``--now``; else the inventory's ``as_of``; else, for an
    offline metrics file, its newest sample (so an old export works as it is); else the current time."""
    max_bytes = _max_file_bytes(args)
    try:
        now_arg = parse_timestamp(args.now) if args.now else None
    except ValueError:
        accepted = "ISO 8601 (e.g. 2026-11-20T13:05:00Z) or epoch seconds"
        raise UsageError(f"--now {args.now!r}: expected {accepted}") from None
    if args.metrics and not args.inventory and not settings.azure.subscriptions:
        raise UsageError("--metrics needs --inventory, or azure.subscriptions in --config for the VMs")
    gateway = None
    if args.inventory:
        vms, as_of = load_inventory_with_as_of(Path(args.inventory), max_bytes=max_bytes)
        source = f"inventory {args.inventory}"
    elif settings.azure.subscriptions:
        if gateway_factory is None:
            from rightsizer.azure import default_gateway

            gateway = default_gateway(settings.azure.max_response_mb)
        else:
            gateway = gateway_factory()
        vms = []
        for sub in settings.azure.subscriptions:
            vms += gateway.list_vms(sub, list(settings.azure.resource_groups) or None)
        as_of = None
        source = f"Azure subscriptions {', '.join(settings.azure.subscriptions)}"
    else:
        vms, as_of = load_inventory_with_as_of(_example_path(EXAMPLE_INVENTORY))
        source = "bundled example fleet (50 real Bitbrains VMs, see rightsizer/examples/DATA.md)"
        args.metrics = str(_example_path(EXAMPLE_METRICS))
    vms = in_shard(vms, parse_shard(args.shard) if args.shard else None)
    usable = [vm for vm in vms if vm.problem is None]  # a bad inventory entry is a skipped row, never queried
    wall_clock = time.time()
    if now_arg is not None:
        now, basis = now_arg, "--now"
    elif as_of is not None:
        now, basis = as_of, "the inventory's as_of"
    else:
        now, basis = wall_clock, "the current time"
    if args.metrics:
        raw = load_metrics_csv(Path(args.metrics), max_bytes=max_bytes)
        if now_arg is None and as_of is None:
            newest = newest_sample(raw, not_after=wall_clock + CLOCK_SKEW_S)
            if newest is not None:
                now, basis = newest, "the newest sample in the metrics file (--now to change)"
        usage = usage_from_raw(raw, usable, settings.metrics, now, not_after=wall_clock + CLOCK_SKEW_S)
    else:
        with progress_bar(
            len(usable), desc="metrics", unit="VMs", enabled=wants_progress(machine_output=_machine_output(args))
        ) as bar:

            def advance(n: int) -> None:
                bar.update(n)

            usage, metrics_note = live_usage(
                usable,
                settings,
                now,
                prometheus_factory=prometheus_factory,
                monitor_factory=monitor_factory,
                on_done=advance,
            )
        source = f"{source}; metrics from {metrics_note}"
    return Inputs(vms, usage, now, source, gateway, basis)


def _max_file_bytes(args: argparse.Namespace) -> int:
    mb = getattr(args, "max_file_mb", None)
    if mb is None:
        return DEFAULT_MAX_BYTES
    if not 0 < mb <= 65536:
        raise UsageError(f"--max-file-mb {mb:g}: expected a number of MiB in (0, 65536]")
    return int(mb * 1024 * 1024)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rightsizer",
        description="Azure VM rightsizing: recommend (dry run by default) and, with --apply, resize safely.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="json", choices=("json", "console"))
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("recommend", help="decide per VM (dry run unless --apply)")
    rec.add_argument("--config", help="settings file (YAML or JSON); see docs/rightsizer.md")
    rec.add_argument("--inventory", help="offline inventory JSON (list of VMs)")
    rec.add_argument("--metrics", help="offline metrics CSV(.gz): vm,timestamp,cpu_percent,memory_percent")
    rec.add_argument("--output", default="table", choices=("table", "json", "csv"))
    rec.add_argument("--shard", help="i/n: only the VMs of shard i of n (stable hash of HA group or VM id)")
    rec.add_argument(
        "--now",
        help="evaluate as of this time (ISO 8601 or epoch seconds); default: the inventory's as_of, else the "
        "newest sample of --metrics, else now",
    )
    rec.add_argument(
        "--max-file-mb",
        type=float,
        help=f"refuse input files larger than this, after decompression (default {DEFAULT_MAX_BYTES // 1048576})",
    )
    rec.add_argument("--forecast", choices=("library", "seasonal-profile", "none"), help="override forecast.method")
    rec.add_argument("--refresh-prices", action="store_true", help="refresh prices from the Retail Prices API")
    rec.add_argument("--apply", action="store_true", help="act on auto/approved resizes (default: dry run)")
    rec.add_argument("--group-by", metavar="TAG", help="also total the savings per value of this VM tag (chargeback)")
    rec.add_argument("--pushgateway", metavar="URL", help="push the run's metrics here (job foresight-rightsizer)")
    rec.add_argument("--pushgateway-timeout", type=float, metavar="SECONDS", help=f"default {DEFAULT_PUSH_TIMEOUT_S:g}")
    rec.add_argument("--metrics-textfile", metavar="PATH", help="write the run's metrics for node-exporter (.prom)")
    rec.add_argument(
        "--audit-key-file", metavar="FILE", help="HMAC key for a keyed audit chain; default: $FORESIGHT_AUDIT_KEY"
    )
    act_cli = _act_cli()
    if act_cli is not None:
        act_cli.register(sub)
    return parser


def _act_cli() -> Any | None:
    if importlib.util.find_spec("rightsizer.act.cli") is None:
        return None
    return importlib.import_module("rightsizer.act.cli")


def run_recommend(args: argparse.Namespace, out: TextIO, **factories: Any) -> int:
    """One run; its metrics are exported (``--pushgateway``, ``--metrics-textfile``) when it completes."""
    started = time.monotonic()
    metrics = RunMetrics()
    export_to = _export_targets(args)
    code = _run_recommend(args, out, metrics, **factories)
    metrics.run_duration.set(round(time.monotonic() - started, 3))
    if code == 0:
        metrics.last_success.set(time.time())
    for problem in export(metrics, export_to):
        structlog.get_logger("rightsizer").warning("metrics.export_failed", error=problem.message)
        print(f"rightsizer: warning: {problem.message}", file=sys.stderr)
        if code == 0:
            code = problem.exit_code
    return code


def _export_targets(args: argparse.Namespace) -> ExportTargets:
    try:
        return ExportTargets.of(
            pushgateway=getattr(args, "pushgateway", None),
            textfile=getattr(args, "metrics_textfile", None),
            shard=getattr(args, "shard", None),
            timeout_s=getattr(args, "pushgateway_timeout", None),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _machine_output(args: argparse.Namespace) -> bool:
    """JSON and CSV are read by programs: no progress bar even on a terminal."""
    return getattr(args, "output", "table") in ("json", "csv")


def _run_recommend(args: argparse.Namespace, out: TextIO, metrics: RunMetrics, **factories: Any) -> int:
    log = structlog.get_logger("rightsizer")
    settings = load_settings(Path(args.config) if args.config else None)
    if args.forecast:
        settings = settings.replace(forecast=replace(settings.forecast, method=args.forecast))
    if args.refresh_prices:
        settings = settings.replace(prices=replace(settings.prices, refresh=True))
    if args.apply:
        settings = settings.replace(dry_run=False)
    inputs = gather_inputs(args, settings, **factories)
    if args.apply and inputs.gateway is None:
        raise UsageError(
            "--apply acts on Azure VMs: configure azure.subscriptions (offline inventories are dry-run only)"
        )
    # A bad inventory entry's region is not trusted (it would be queried for prices).
    regions = {vm.region for vm in inputs.vms if vm.problem is None} or {"westeurope"}
    cache_dir = Path(settings.prices.cache_dir) if settings.prices.cache_dir else None
    price_load = load_prices(
        refresh=settings.prices.refresh,
        regions=regions,
        cache_dir=cache_dir,
        api_url=settings.prices.api_url,
        timeout_s=settings.prices.timeout_s,
    )
    catalogue: Catalogue = load_catalogue(price_load)
    log.info(
        "run.start",
        vms=len(inputs.vms),
        source=inputs.source,
        prices=price_load.note,
        dry_run=settings.dry_run,
        now=datetime.fromtimestamp(inputs.now, UTC).isoformat(),
    )
    to_size = sum(
        1 for vm in inputs.vms if vm.power_state is PowerState.RUNNING and isinstance(inputs.usage.get(vm.id), VmUsage)
    )
    with progress_bar(
        to_size, desc="forecast and size", unit="VMs", enabled=wants_progress(machine_output=_machine_output(args))
    ) as bar:
        recs = recommend(inputs.vms, inputs.usage, catalogue, settings, inputs.now, on_stats=lambda: bar.update(1))
    metrics.observe_recommendations(recs)
    for r in recs:
        log.bind(vm=r.vm.name, vm_id=r.vm.id).info(
            "vm.decision",
            action=r.action.value,
            decision=r.decision.value,
            target=r.target_size,
            monthly_savings_usd=r.monthly_savings_usd,
            confidence=r.confidence,
            gate=r.gate,
            reason=r.reason,
        )
    as_of = datetime.fromtimestamp(inputs.now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mode = "dry run" if settings.dry_run else "APPLY"
    header = {
        "as_of": as_of,
        "as_of_basis": inputs.as_of_basis,
        "mode": mode,
        "inputs": inputs.source,
        "prices": price_load.note,
        "price_origin": price_load.origin,
        "shard": args.shard,
    }
    group_by = getattr(args, "group_by", None)
    if args.output == "json":
        out.write(to_json(recs, header=header, group_by=group_by))
    elif args.output == "csv":
        out.write(to_csv(recs, as_of=f"{as_of} ({inputs.as_of_basis})", group_by=group_by))
    else:
        lines = [
            f"rightsizer {mode} as of {as_of} - {inputs.source}",
            f"prices: {price_load.note}",
            f"evaluated as of {as_of}: {inputs.as_of_basis}",
            "",
        ]
        out.write(to_table(recs, header_lines=lines, group_by=group_by))
    _record_and_apply(recs, settings, inputs, log, metrics, audit_key_file=getattr(args, "audit_key_file", None))
    return 0


def _record_and_apply(
    recs: Sequence[Recommendation],
    settings: Settings,
    inputs: Inputs,
    log: Any,
    metrics: RunMetrics,
    *,
    audit_key_file: str | None = None,
) -> None:
    if settings.audit_log is None and settings.dry_run:
        return
    from rightsizer.act.alerts import Alerter
    from rightsizer.act.apply import apply_recommendations, change_summaries, record_decisions
    from rightsizer.audit import AuditLog, AuditLogError, load_audit_key

    try:
        key = load_audit_key(audit_key_file)
    except ValueError as error:
        raise UsageError(str(error)) from None
    audit = AuditLog(settings.audit_log or "rightsizer-audit.jsonl", key=key)
    try:
        if inputs.gateway is None:
            record_decisions(recs, audit, dry_run=True)
        else:
            alerter = Alerter(
                webhook_url=settings.act.webhook_url, webhook_timeout_s=settings.act.webhook_timeout_s, metrics=metrics
            )
            results = apply_recommendations(
                recs, compute=inputs.gateway, settings=settings, audit=audit, alerter=alerter
            )
            for result in results:
                log.info("vm.action_result", result=repr(result))
            metrics.observe_changes(change_summaries(recs, results))
    except AuditLogError as error:
        raise UsageError(str(error)) from None
    head = audit.read_head()
    if head is not None:
        # Logged and exported so the head can be anchored outside the log (audit verify --expect-head HASH).
        log.info("audit.head", audit_log=str(audit.path), seq=head.seq, hash=head.hash)
        metrics.set_audit_head(head.hash)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, **factories: Any) -> int:
    """The command line; ``factories`` (``gateway_factory``, ``prometheus_factory``, ``monitor_factory``) let
    tests point the recommend command at fake services."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = {"recommend", *(_subcommand_names(parser))}
    # Global flags may come first; without a command after them, "recommend" is meant.
    i = 0
    while i < len(args_list) and args_list[i].split("=", 1)[0] in ("--log-level", "--log-format"):
        i += 1 if "=" in args_list[i] else 2
    top_help = i < len(args_list) and args_list[i] in ("-h", "--help", "--version")
    if (i >= len(args_list) or args_list[i] not in commands) and not top_help:
        args_list.insert(i, "recommend")
    args = parser.parse_args(args_list)
    configure_logging(args.log_level, args.log_format)
    stream = out or sys.stdout
    try:
        if args.command == "recommend":
            return run_recommend(args, stream, **factories)
        handler = getattr(args, "func", None) or getattr(args, "handler", None)
        if handler is None:
            parser.error(f"command {args.command!r} has no handler")
        result = handler(args)
        return int(result or 0)
    except (UsageError, FileProblem, SettingsError, PriceDataError, CatalogueError) as exc:
        print(f"rightsizer: error: {exc}", file=sys.stderr)
        return 2
    except TransientAzureError as exc:
        print(f"rightsizer: error: Azure unreachable: {exc}", file=sys.stderr)
        return 3
    except AzureError as exc:
        print(f"rightsizer: error: {exc}", file=sys.stderr)
        return 2
    except SourceUnavailable as exc:
        print(f"rightsizer: error: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # Prometheus or the pushgateway unreachable (3), other bad input (2), a bug (1)
        code = exit_code_for(exc)
        if code is ExitCode.INTERNAL:
            structlog.get_logger("rightsizer").exception("internal error", error=str(exc))
        print(f"rightsizer: error: {exc}", file=sys.stderr)
        return int(code)


def _subcommand_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []
