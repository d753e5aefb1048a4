"""Alerts when a change is rolled back or an SLA is breached: structured log, the run's counters, webhook."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from rightsizer.run_metrics import RunMetrics

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


class Alerter:
    """Alerts, counted in the run's metrics (:class:`~rightsizer.run_metrics.RunMetrics`, passed in; or a fresh set
    in ``registry`` when only a registry is given, as tests do)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        webhook_url: str | None = None,
        webhook_timeout_s: float = 5.0,
        metrics: RunMetrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else RunMetrics(registry)
        self.registry = self.metrics.registry
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self.changes = self.metrics.changes
        self.rollbacks = self.metrics.rollbacks
        self.sla_breaches = self.metrics.sla_breaches
        self.webhook_failures = self.metrics.webhook_failures

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
