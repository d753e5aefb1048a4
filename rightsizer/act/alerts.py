"""Alerts when a change is rolled back or an SLA is breached: structured log, Prometheus counters, webhook."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


class Alerter:
    """Counters live in the registry passed in (tests make their own; production passes the default one)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        webhook_url: str | None = None,
        webhook_timeout_s: float = 5.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self.changes = Counter(
            "rightsizer_changes_total", "VM size changes by outcome", ["outcome"], registry=self.registry
        )
        self.rollbacks = Counter(
            "rightsizer_rollbacks_total",
            "Changes rolled back to the previous size",
            ["reason"],
            registry=self.registry,
        )
        self.sla_breaches = Counter(
            "rightsizer_sla_breaches_total",
            "Health signals breached during validation windows",
            ["signal"],
            registry=self.registry,
        )
        self.webhook_failures = Counter(
            "rightsizer_alert_webhook_failures_total",
            "Alert webhook POSTs that failed",
            registry=self.registry,
        )

    def alert(self, event: str, **fields: Any) -> None:
        log.error("rightsizer.alert", alert=event, **fields)
        if self.webhook_url:
            self._post({"alert": event, **fields})

    def _post(self, payload: Mapping[str, Any]) -> None:
        request = urllib.request.Request(
            self.webhook_url or "",
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError) as error:
            self.webhook_failures.inc()
            log.warning("rightsizer.alert_webhook_failed", url=self.webhook_url, error=str(error))
