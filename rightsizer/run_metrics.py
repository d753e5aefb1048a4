"""A run's metrics in one registry passed in, and their export from a CronJob: Pushgateway and node-exporter textfile.

A CronJob's process ends before any scrape, so the run's figures are pushed (``--pushgateway URL``, job
``foresight-rightsizer``, grouped by shard when ``--shard`` is used so shards do not overwrite each other) and/or
written to a textfile for node-exporter's textfile collector (``--metrics-textfile PATH``, written to a temporary
file and renamed, so the collector never reads half a file).

Metrics (names shared with dashboards and alerts, do not rename):

- ``rightsizer_vms_seen``: VMs evaluated this run.
- ``rightsizer_rows{decision,gate}``: rows per decision and gate (gate ``none`` when no gate decided).
- ``rightsizer_savings_monthly{state}``: ``recommended`` (every recommended resize and shutdown), ``applied``
  (changes done this run), ``pending`` (awaiting approval); in the price catalogue's currency (USD), hourly x 730.
- ``rightsizer_changes_total{outcome}``, ``rightsizer_rollbacks_total{reason}``: this run's changes and rollbacks.
- ``rightsizer_compliance_changes_total``: changes started on a compliance-tagged VM (should stay 0: the gates
  skip them; anything else is a bug or a tag added during the run).
- ``rightsizer_run_duration_seconds``, ``rightsizer_last_success_timestamp_seconds``.
- ``rightsizer_audit_head_info{hash}``: 1, labelled with the audit chain's head after the run, to anchor it.
- ``rightsizer_sla_breaches_total{signal}``, ``rightsizer_alert_webhook_failures_total`` (from the act side).

Export failures: a failed push or textfile write is logged as a warning and never changes what the run did; it
makes the exit code 3 (push: a service unreachable) or 2 (textfile: a bad path) only when the run itself
succeeded, so a failing run keeps its own code.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, write_to_textfile

from rightsizer.domain import Action, Decision, Recommendation
from rightsizer.tags import compliance_regimes

JOB = "foresight-rightsizer"
DEFAULT_PUSH_TIMEOUT_S = 10.0


class RunMetrics:
    """Every rightsizer metric, registered in ``registry`` (tests make their own; the CLI makes one per run)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.vms_seen = Gauge("rightsizer_vms_seen", "VMs evaluated in the run", registry=r)
        self.rows = Gauge("rightsizer_rows", "Rows by decision and gate", ["decision", "gate"], registry=r)
        self.savings_monthly = Gauge(
            "rightsizer_savings_monthly",
            "Monthly savings (catalogue currency, hourly x 730) by state: recommended, applied, pending",
            ["state"],
            registry=r,
        )
        self.changes = Counter("rightsizer_changes_total", "VM size changes by outcome", ["outcome"], registry=r)
        self.rollbacks = Counter(
            "rightsizer_rollbacks_total", "Changes rolled back to the previous size", ["reason"], registry=r
        )
        self.compliance_changes = Counter(
            "rightsizer_compliance_changes_total", "Changes started on a compliance-tagged VM (should be 0)", registry=r
        )
        self.sla_breaches = Counter(
            "rightsizer_sla_breaches_total", "Health signals breached during validation windows", ["signal"], registry=r
        )
        self.webhook_failures = Counter(
            "rightsizer_alert_webhook_failures_total", "Alert webhook POSTs that failed", registry=r
        )
        self.run_duration = Gauge("rightsizer_run_duration_seconds", "Duration of the run", registry=r)
        self.last_success = Gauge(
            "rightsizer_last_success_timestamp_seconds", "End of the last run that succeeded (epoch s)", registry=r
        )
        self.audit_head = Gauge(
            "rightsizer_audit_head_info", "The audit chain's head hash after the run (value 1)", ["hash"], registry=r
        )
        for state in ("recommended", "applied", "pending"):
            self.savings_monthly.labels(state=state).set(0)
        self.compliance_changes.inc(0)

    def observe_recommendations(self, recs: Sequence[Recommendation]) -> None:
        self.vms_seen.set(len(recs))
        counts: dict[tuple[str, str], int] = {}
        for rec in recs:
            key = (rec.decision.value, rec.gate or "none")
            counts[key] = counts.get(key, 0) + 1
        for (decision, gate), count in counts.items():
            self.rows.labels(decision=decision, gate=gate).set(count)
        recommended = sum(
            r.monthly_savings_usd
            for r in recs
            if r.decision is not Decision.SKIP
            and r.action in (Action.RESIZE, Action.SHUTDOWN)
            and r.monthly_savings_usd > 0
        )
        pending = sum(
            r.monthly_savings_usd
            for r in recs
            if r.decision is Decision.NEEDS_APPROVAL and r.action is Action.RESIZE and r.monthly_savings_usd > 0
        )
        self.savings_monthly.labels(state="recommended").set(round(recommended, 2))
        self.savings_monthly.labels(state="pending").set(round(pending, 2))

    def observe_changes(self, changes: Iterable[ChangeSummary]) -> None:
        """The act side's results (already counted by outcome): applied savings and compliance-tagged changes."""
        applied = 0.0
        for change in changes:
            if change.started and change.compliance_tagged:
                self.compliance_changes.inc()
            if change.done:
                applied += change.monthly_savings_usd
        self.savings_monthly.labels(state="applied").set(round(applied, 2))

    def set_audit_head(self, head_hash: str) -> None:
        self.audit_head.clear()
        self.audit_head.labels(hash=head_hash).set(1)


@dataclass(frozen=True, slots=True)
class ChangeSummary:
    """What the metrics need from one applied change."""

    started: bool
    done: bool
    monthly_savings_usd: float
    compliance_tagged: bool

    @classmethod
    def of(cls, rec: Recommendation, *, started: bool, done: bool) -> ChangeSummary:
        return cls(started, done, rec.monthly_savings_usd if done else 0.0, bool(compliance_regimes(rec.vm.tags)))


def check_pushgateway_url(url: str) -> str:
    """``http(s)://host[:port][/path]``; ValueError naming the accepted form otherwise."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
        raise ValueError(f"--pushgateway {url[:80]!r}: expected http(s)://host[:port][/path]")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class ExportTargets:
    """Where a run's metrics go (none, one or both)."""

    pushgateway: str | None = None
    textfile: str | None = None
    grouping_key: dict[str, str] | None = None
    timeout_s: float = DEFAULT_PUSH_TIMEOUT_S

    @classmethod
    def of(
        cls,
        *,
        pushgateway: str | None,
        textfile: str | None,
        shard: str | None = None,
        timeout_s: float | None = None,
    ) -> ExportTargets:
        """Checked command-line values (ValueError naming the option otherwise). With a shard, the push goes to
        its own group (``shard=i-of-n``) so shards do not replace each other's metrics."""
        timeout = DEFAULT_PUSH_TIMEOUT_S if timeout_s is None else timeout_s
        if not 0 < timeout <= 300:
            raise ValueError(f"--pushgateway-timeout {timeout:g}: expected seconds in (0, 300]")
        return cls(
            pushgateway=check_pushgateway_url(pushgateway) if pushgateway else None,
            textfile=textfile or None,
            grouping_key={"shard": shard.replace("/", "-of-")} if shard else None,
            timeout_s=timeout,
        )


@dataclass(frozen=True, slots=True)
class ExportProblem:
    exit_code: int
    message: str


def export(metrics: RunMetrics, targets: ExportTargets) -> list[ExportProblem]:
    """Push and/or write the registry; the problems (never raised) with the exit code each would mean."""
    problems: list[ExportProblem] = []
    if targets.textfile:
        try:
            write_to_textfile(targets.textfile, metrics.registry)
        except OSError as error:
            problems.append(
                ExportProblem(2, f"cannot write --metrics-textfile {targets.textfile}: {error.strerror or error}")
            )
    if targets.pushgateway:
        try:
            push_to_gateway(
                targets.pushgateway,
                job=JOB,
                registry=metrics.registry,
                grouping_key=targets.grouping_key or {},
                timeout=targets.timeout_s,
            )
        except Exception as error:  # urllib raises URLError, HTTPError, timeouts, ValueError for odd answers
            problems.append(ExportProblem(3, f"push to {targets.pushgateway} failed: {type(error).__name__}: {error}"))
    return problems
