"""Keep one Kubernetes resource's state current: list, then watch, with resync and backoff.

This is the informer pattern of client-go and kopf, for one resource, on one thread:

- an initial **list** (done by the caller's ``relist``, which replaces its whole state and returns the
  list's ``resourceVersion``), then a **watch** from that version through the ``kubernetes`` client's
  ``watch.Watch().stream``; each ``ADDED``/``MODIFIED``/``DELETED`` event goes to ``apply``;
- each watch request carries ``timeoutSeconds`` (the API server ends it; the loop re-watches from the last
  version seen), and a full **resync** (re-list) every ``resync_s`` heals any event that was missed;
- ``410 Gone`` (the version expired from the API server's history) re-lists at once;
- any other failure (connection refused or reset, 5xx, 401/403) retries with capped exponential backoff and
  full jitter; a failure streak is logged once when it starts and once when it ends.

``stop()`` returns within about a second: it shuts the open watch connection's socket down, so no thread
waits for the watch timeout. The module knows nothing of annotations or ScaledObjects.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

GONE = 410


@dataclass(frozen=True, slots=True)
class WatchTiming:
    """How a list-then-watch loop paces itself (seconds)."""

    resync_s: float = 600.0
    """Full re-list this often, to heal events a watch may have missed."""
    watch_timeout_s: float = 300.0
    """``timeoutSeconds`` of one watch request: the API server ends it, the loop watches again."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    read_grace_s: float = 30.0
    """Client-side read timeout beyond ``watch_timeout_s``: a connection silent past it is dead."""

    def __post_init__(self) -> None:
        for name in ("resync_s", "watch_timeout_s", "backoff_initial_s", "backoff_max_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s: must be >= backoff_initial_s")


class Backoff:
    """Exponential delays with jitter (half to all of the nominal delay), capped."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        nominal = min(self.max_s, self.initial_s * 2 ** min(self.attempts, 30))
        self.attempts += 1
        return float(nominal * (0.5 + 0.5 * self._rng.random()))

    def reset(self) -> None:
        self.attempts = 0


@dataclass(slots=True)
class LoopCounters:
    relists: int = 0
    events: int = 0
    failures: int = 0
    expired: int = 0
    last_error: str | None = None


class ListWatchLoop:
    """One resource kept current on a background thread (see the module docstring)."""

    def __init__(
        self,
        resource: str,
        *,
        relist: Callable[[], str],
        watch_fn: Callable[..., Any],
        watch_args: tuple[Any, ...] = (),
        apply: Callable[[str, Any], None],
        timing: WatchTiming,
        describe: Callable[[BaseException], str] = repr,
        rng: random.Random | None = None,
    ) -> None:
        self.resource = resource
        self._relist = relist
        self._watch_fn = watch_fn
        self._watch_args = watch_args
        self._apply = apply
        self.timing = timing
        self._describe = describe
        self._backoff = Backoff(timing.backoff_initial_s, timing.backoff_max_s, rng)
        self.counters = LoopCounters()
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self._failing = False
        self._log = structlog.get_logger(__name__).bind(component="kube-watch", resource=resource)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"kube-watch-{self.resource}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop and join; shuts the open watch connection down so the thread does not wait for its timeout."""
        self._stop.set()
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + timeout_s
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            watch = self._watch
            if watch is not None:
                watch.stop()  # type: ignore[no-untyped-call]  # shuts the socket down: a blocked read returns at once
            thread.join(0.05)

    def _run(self) -> None:
        resource_version: str | None = None
        resync_at = 0.0
        while not self._stop.is_set():
            try:
                if resource_version is None or time.monotonic() >= resync_at:
                    resource_version = self._relist()
                    self.counters.relists += 1
                    resync_at = time.monotonic() + self.timing.resync_s
                    self._reached()
                resource_version = self._watch_once(resource_version, resync_at)
            except ApiException as error:
                if error.status == GONE:
                    # The version we watch from left the API server's history: only a fresh list is complete.
                    self.counters.expired += 1
                    self._log.info("watch version expired (410 Gone); listing again", version=resource_version)
                    resource_version = None
                    continue
                self._failed(error)
            except Exception as error:  # a connection error, a timeout, a malformed answer: retry later
                if self._stop.is_set():
                    return
                self._failed(error)

    def _watch_once(self, resource_version: str, resync_at: float) -> str:
        """One watch request, until the server ends it; returns the last version seen."""
        timeout = max(1, min(int(self.timing.watch_timeout_s), int(resync_at - time.monotonic()) + 1))
        watch = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        self._watch = watch

        @functools.wraps(self._watch_fn)  # keeps the signature and docstring the watch reads its types from
        def open_watch(*args: Any, **kwargs: Any) -> Any:
            response = self._watch_fn(*args, **kwargs)
            if 200 <= int(getattr(response, "status", 0)) < 300:
                self._reached()
            return response

        try:
            if self._stop.is_set():
                return resource_version
            for event in watch.stream(  # type: ignore[no-untyped-call]
                open_watch,
                *self._watch_args,
                resource_version=resource_version,
                timeout_seconds=timeout,
                _request_timeout=(self.timing.connect_timeout_s, timeout + self.timing.read_grace_s),
            ):
                if self._stop.is_set():
                    break
                kind = str(event.get("type", ""))
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.counters.events += 1
                    self._apply(kind, event["object"])
        finally:
            self._watch = None
        return str(watch.resource_version or resource_version)

    def _failed(self, error: BaseException) -> None:
        self.counters.failures += 1
        self.counters.last_error = self._describe(error)
        delay = self._backoff.next_delay()
        if not self._failing:
            self._failing = True
            self._log.warning(
                "Kubernetes API unreachable or refusing; retrying with backoff (logged once per outage)",
                error=self.counters.last_error,
                retry_in_s=round(delay, 2),
            )
        self._stop.wait(delay)

    def _reached(self) -> None:
        """The API server answered: end a failure streak (and say so once)."""
        if self._failing:
            self._failing = False
            self._log.info("Kubernetes API reachable again", failed_attempts=self._backoff.attempts)
        self._backoff.reset()
        self.counters.last_error = None
