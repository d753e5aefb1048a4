"""Health signals during the validation window: a probe protocol and its Prometheus implementation."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from rightsizer.act.settings import HealthSignal
from rightsizer.domain import VmInfo

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


@dataclass(frozen=True, slots=True)
class Breach:
    signal: str
    value: float | None
    threshold: float
    detail: str = ""


class HealthProbeError(RuntimeError):
    """The health signals could not be read (Prometheus down, bad query)."""


class HealthProbe(Protocol):
    def check(self, vm: VmInfo, signals: Sequence[HealthSignal], now: dt.datetime) -> list[Breach]:
        """The signals breached now (empty = healthy). Raises :class:`HealthProbeError` when unreadable."""
        ...


class NoSignalsProbe:
    """For runs without a Prometheus: reports every VM healthy (validation then only checks the power state)."""

    def check(self, vm: VmInfo, signals: Sequence[HealthSignal], now: dt.datetime) -> list[Breach]:
        return []


class PrometheusHealthProbe:
    """Evaluates each signal as an instant query at ``now``; the largest value across the returned series is
    compared with the threshold. A query that returns nothing is not a breach (logged)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, connection: Any = None) -> None:
        if connection is None:
            from prometheus_api_client import PrometheusConnect

            connection = PrometheusConnect(url=url)  # TLS verified with the system's CAs
        self._connection = connection
        self._timeout_s = timeout_s
        self.url = url

    def check(self, vm: VmInfo, signals: Sequence[HealthSignal], now: dt.datetime) -> list[Breach]:
        breaches = []
        for signal in signals:
            query = signal.render(vm=vm.name, resource_group=vm.resource_group, group=vm.group or "")
            try:
                result = self._connection.custom_query(
                    query=query, params={"time": now.timestamp(), "timeout": f"{self._timeout_s:g}s"}
                )
            except Exception as error:
                raise HealthProbeError(f"signal {signal.name}: query {query!r} failed: {error}") from error
            values = []
            for series in result or []:
                try:
                    value = float(series["value"][1])
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
                if not math.isnan(value):
                    values.append(value)
            if not values:
                log.info("health.no_data", vm=vm.name, signal=signal.name, query=query)
                continue
            worst = max(values) if signal.breach_when_above else min(values)
            if signal.breached(worst):
                breaches.append(Breach(signal.name, worst, signal.threshold, query))
        return breaches
