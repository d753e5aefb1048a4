"""The acting side's commands, added to ``rightsizer``'s parser by :func:`register`.

rightsizer approve VM_ID --target SIZE --by NAME --tier finops-lead|executive [--inventory FILE.json]
rightsizer audit verify [--audit-log FILE] [--expect-head HASH] [--min-records N] [--audit-key-file FILE]
rightsizer report --month YYYY-MM [--group-by TAG] [--audit-log FILE]

(``--audit-log``, not ``--log``: argparse would read ``--log`` as an abbreviation of the global ``--log-level``.)
rightsizer spot [--apply]        # one Spot fallback pass over the configured scale sets (plan only without --apply)
rightsizer recover [--apply]     # finish or roll back changes a crashed run left (list only without --apply)

Every handler takes the parsed arguments (plus, for tests, an optional gateway) and builds the rest from the
settings file given with ``--config``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import structlog

from rightsizer import audit as audit_kinds
from rightsizer.act.settings import APPROVAL_TAG, CHANGE_TAG, RECOMMENDATION_TAG
from rightsizer.audit import AUDIT_KEY_ENV, AuditLog, load_audit_key
from rightsizer.azure.errors import AzureError, TransientAzureError
from rightsizer.azure.gateway import ComputeGateway, VmRef
from rightsizer.domain import ApprovalTier
from rightsizer.exit_codes import exit_code_for
from rightsizer.files import FileProblem, load_json
from rightsizer.settings import Settings, load_settings
from rightsizer.tags import ApprovalTag, RecommendationTag, parse_iso

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)

DEFAULT_AUDIT_LOG = "rightsizer-audit.jsonl"
APPROVER_TIERS = ("finops-lead", "executive")


class CommandError(ValueError):
    """A command that cannot run as asked; the message says what to pass instead."""


def register(subparsers: Any) -> None:
    """Add ``approve``, ``audit verify``, ``report``, ``spot`` and ``recover`` to the rightsizer's parser."""
    approve = subparsers.add_parser("approve", help="approve a pending recommendation (writes the approval tag)")
    approve.add_argument("vm_id", metavar="VM_ID", help="ARM resource id of the VM (or its id/name in --inventory)")
    approve.add_argument("--target", required=True, help="the recommended size being approved, e.g. Standard_D2s_v5")
    approve.add_argument("--by", required=True, help="approver's name")
    approve.add_argument("--tier", required=True, choices=APPROVER_TIERS, help="approver's tier")
    approve.add_argument("--inventory", help="offline inventory JSON to write the approval into instead of Azure")
    _common(approve)
    approve.set_defaults(func=_wrap(cmd_approve))

    audit = subparsers.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the audit log's chain and head; exit 4 when the check fails, printing the head hash"
    )
    verify.add_argument("--audit-log", help=f"audit log (default: settings audit_log or {DEFAULT_AUDIT_LOG})")
    verify.add_argument("--config", help="settings file (YAML or JSON)")
    verify.add_argument(
        "--expect-head", metavar="HASH", help="a head hash recorded earlier (anchored elsewhere): must be in the chain"
    )
    verify.add_argument(
        "--min-records", type=int, default=0, metavar="N", help="fail when the log has fewer records (e.g. emptied)"
    )
    verify.add_argument("--no-head-file", action="store_true", help="do not compare with the head file next to the log")
    _key_option(verify)
    verify.set_defaults(func=_wrap(cmd_audit_verify))

    report = subparsers.add_parser("report", help="monthly summary for finance and compliance")
    report.add_argument("--month", required=True, help="YYYY-MM")
    report.add_argument("--group-by", metavar="TAG", help="totals per value of this VM tag (e.g. owner, cost-center)")
    report.add_argument("--audit-log", help=f"audit log (default: settings audit_log or {DEFAULT_AUDIT_LOG})")
    report.add_argument("--config", help="settings file (YAML or JSON)")
    _key_option(report)
    report.set_defaults(func=_wrap(cmd_report))

    spot = subparsers.add_parser("spot", help="one Spot fallback pass over the configured scale sets")
    spot.add_argument("--apply", action="store_true", help="act (default: print the plan only)")
    _common(spot)
    spot.set_defaults(func=_wrap(cmd_spot))

    recover = subparsers.add_parser("recover", help="finish or roll back changes a crashed run left behind")
    recover.add_argument("--apply", action="store_true", help="act (default: list unfinished changes only)")
    _common(recover)
    recover.set_defaults(func=_wrap(cmd_recover))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="settings file (YAML or JSON)")
    parser.add_argument("--audit-log", help=f"audit log (default: settings audit_log or {DEFAULT_AUDIT_LOG})")
    parser.add_argument("--now", help="act as of this time (ISO 8601 UTC); default: now")
    _key_option(parser)


def _key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit-key-file",
        metavar="FILE",
        help=f"HMAC key for a keyed audit chain (e.g. a mounted Secret); default: ${AUDIT_KEY_ENV} if set",
    )


def _wrap(handler: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except TransientAzureError as error:
            print(f"rightsizer: error: Azure unreachable: {error}", file=sys.stderr)
            return 3
        except (CommandError, AzureError, ValueError, OSError) as error:
            print(f"rightsizer: error: {error}", file=sys.stderr)
            return int(exit_code_for(error))

    return run


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if getattr(args, "config", None) else None)


def _audit(args: argparse.Namespace, settings: Any) -> AuditLog:
    path = getattr(args, "audit_log", None) or settings.audit_log or DEFAULT_AUDIT_LOG
    return AuditLog(path, key=load_audit_key(getattr(args, "audit_key_file", None)))


def _now(args: argparse.Namespace) -> dt.datetime:
    text = getattr(args, "now", None)
    if not text:
        return dt.datetime.now(dt.UTC)
    try:
        return parse_iso(text)
    except ValueError as error:
        raise CommandError(f"--now {text!r}: expected ISO 8601 with a timezone, e.g. 2026-11-28T02:00:00Z") from error


def _gateway(compute: ComputeGateway | None, settings: Settings) -> ComputeGateway:
    if compute is not None:
        return compute
    from rightsizer.azure import default_gateway

    return default_gateway(settings.azure.max_response_mb)


def _subscriptions(settings: Any) -> tuple[list[str], list[str] | None]:
    subscriptions = list(settings.azure.subscriptions)
    if not subscriptions:
        raise CommandError("no Azure subscriptions configured: set azure.subscriptions in the --config file")
    return subscriptions, list(settings.azure.resource_groups) or None


# -- approve ------------------------------------------------------------------------------------------------


def cmd_approve(args: argparse.Namespace, *, compute: ComputeGateway | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = _settings(args)
    now = _now(args)
    if args.tier not in APPROVER_TIERS:
        raise CommandError(f"--tier {args.tier!r}: expected one of {', '.join(APPROVER_TIERS)}")
    if "|" in args.by or "|" in args.target or not args.by.strip():
        raise CommandError("--by and --target must be non-empty and must not contain '|'")
    value = ApprovalTag(args.target, ApprovalTier(args.tier), args.by, now).render()
    if args.inventory:
        vm_id = _approve_in_inventory(Path(args.inventory), args.vm_id, args.target, value)
    else:
        gateway = _gateway(compute, settings)
        try:
            ref = VmRef.parse(args.vm_id)
        except ValueError as error:
            raise CommandError(str(error)) from error
        vm = gateway.get_vm(ref)
        pending = vm.tags.get(RECOMMENDATION_TAG)
        if pending is None:
            raise CommandError(
                f"{vm.name} has no pending recommendation ({RECOMMENDATION_TAG} tag); "
                "a run with --apply writes it when a resize needs approval"
            )
        try:
            pending_target = RecommendationTag.parse(pending).target_size
        except ValueError as error:
            raise CommandError(f"{vm.name}: {error}; a run with --apply rewrites it") from error
        if pending_target != args.target:
            raise CommandError(
                f"{vm.name}: the pending recommendation is {pending_target}, not {args.target}; approve that size"
            )
        gateway.set_tags(ref, {APPROVAL_TAG: value})
        vm_id = vm.id
    _audit(args, settings).append(
        audit_kinds.APPROVAL, vm=vm_id, target_size=args.target, tier=args.tier, approver=args.by
    )
    out.write(f"approved {vm_id}: {APPROVAL_TAG}={value}\n")
    return 0


def _approve_in_inventory(path: Path, vm_key: str, target: str, value: str) -> str:
    try:
        doc = load_json(path, "inventory")
    except FileProblem as error:
        raise CommandError(str(error)) from None
    entries = doc.get("vms") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise CommandError(f"{path}: expected a JSON list of VMs (or an object with a 'vms' list)")
    matches = [e for e in entries if isinstance(e, dict) and vm_key in (e.get("id"), e.get("name"))]
    if len(matches) != 1:
        raise CommandError(f"{path}: {len(matches)} VMs match {vm_key!r} by id or name; need exactly one")
    entry = matches[0]
    tags = entry.get("tags")
    if tags is None:
        tags = entry["tags"] = {}
    if not isinstance(tags, dict):
        raise CommandError(f"{path}: VM {vm_key!r} has 'tags' that is not an object")
    tags[APPROVAL_TAG] = value
    # Atomic replace: a crash leaves the old or the new file, never half of one.
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(doc, file, indent=2)
        file.write("\n")
    os.replace(temp, path)
    return str(entry.get("id"))


# -- audit / report ---------------------------------------------------------------------------------------


CHECK_FAILED = 4
"""Exit code of a check that ran and failed (the CLI's contract: 0 ok, 2 bad input, 3 unreachable, 4 check)."""


def cmd_audit_verify(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    audit = _audit(args, _settings(args))
    if args.min_records < 0:
        raise CommandError(f"--min-records {args.min_records}: expected a count >= 0")
    if not audit.path.exists() and not audit.head_path.exists() and not args.expect_head and not args.min_records:
        raise CommandError(f"audit log {audit.path} does not exist")
    result = audit.verify(
        expect_head=args.expect_head, min_records=args.min_records, use_head_file=not args.no_head_file
    )
    out.write(result.describe(audit.path) + "\n")
    return 0 if result.ok else CHECK_FAILED


def cmd_report(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from rightsizer.report import monthly_report

    out = out or sys.stdout
    settings = _settings(args)
    audit = _audit(args, settings)
    if not audit.path.exists():
        raise CommandError(f"audit log {audit.path} does not exist")
    key = load_audit_key(getattr(args, "audit_key_file", None))
    out.write(monthly_report(audit.path, args.month, key=key, group_by=args.group_by))
    return 0


# -- spot / recover ---------------------------------------------------------------------------------------


def cmd_spot(args: argparse.Namespace, *, compute: ComputeGateway | None = None, out: TextIO | None = None) -> int:
    from rightsizer.act.spot import FAILED_MODE, run_spot_passes

    out = out or sys.stdout
    settings = _settings(args)
    now = _now(args)
    subscriptions, groups = _subscriptions(settings)
    gateway = _gateway(compute, settings)
    audit = _audit(args, settings)
    failures = 0
    for subscription in subscriptions:
        for result in run_spot_passes(
            gateway, subscription, groups, settings.act.spot, now, audit, dry_run=not args.apply
        ):
            if result.mode == FAILED_MODE:
                failures += 1
                out.write(f"{result.scale_set}: failed: {'; '.join(result.errors)}\n")
            elif result.dry_run and result.plan is not None:
                plan = result.plan
                out.write(
                    f"{result.scale_set}: would run in mode {plan.mode}; replace {len(plan.delete_evicted)} evicted, "
                    f"return {len(plan.rebalance_regular)} to Spot; {'; '.join(plan.reasons) or 'nothing to do'}\n"
                )
            else:
                out.write(
                    f"{result.scale_set}: mode {result.mode}; replaced {result.replaced_evicted} evicted, "
                    f"returned {result.returned_to_spot} to Spot; "
                    f"{'; '.join(result.reasons + result.errors) or 'ok'}\n"
                )
    return 3 if failures else 0


def cmd_recover(args: argparse.Namespace, *, compute: ComputeGateway | None = None, out: TextIO | None = None) -> int:
    from rightsizer.act.recover import recover_changes, unfinished

    out = out or sys.stdout
    settings = _settings(args)
    act = settings.act
    subscriptions, groups = _subscriptions(settings)
    gateway = _gateway(compute, settings)
    vms = [vm for subscription in subscriptions for vm in gateway.list_vms(subscription, groups)]
    for vm in vms:
        if vm.problem is not None:  # its tags are not trusted, so an unfinished change on it cannot be seen
            out.write(f"{vm.name}: not checked: {vm.problem}\n")
    pending = unfinished([vm for vm in vms if vm.problem is None])
    if not args.apply:
        for vm in pending:
            out.write(
                f"{vm.name}: unfinished change {vm.tags.get(CHANGE_TAG)} (size {vm.size}, {vm.power_state.value})\n"
            )
        out.write(f"{len(pending)} unfinished change(s); run with --apply to {act.recover_mode} them\n")
        return 0
    fixed_now = _now(args) if getattr(args, "now", None) else None
    results = recover_changes(
        pending,
        compute=gateway,
        act=act,
        audit=_audit(args, settings),
        now_fn=(lambda: fixed_now) if fixed_now is not None else None,
    )
    for result in results:
        out.write(f"{result.vm_name}: {result.outcome.value}: {result.reason}\n")
    return 1 if any(r.outcome.value == "failed" for r in results) else 0
