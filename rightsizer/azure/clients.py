"""The ``azure-mgmt-compute`` clients the gateway talks through, one per subscription, built alike. The gateway
passes the SDK's client class in: it stays the only module that imports the management SDK.

Every client reads its answers through the rightsizer's bounded session (:mod:`rightsizer.bounded_http`) under
azure-core's transport, so an answer larger than the cap (``azure.max_response_mb``) is refused while it is read,
before the SDK holds or parses it (:func:`rightsizer.azure.retry.classify` makes that a permanent error). The SDK's
own retries are off: :mod:`rightsizer.azure.retry` is the one retry policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from azure.core.pipeline.transport import RequestsTransport

from rightsizer.bounded_http import BoundedSession

DEFAULT_MAX_RESPONSE_MB = 64.0
"""The cap on one Resource Manager answer when the caller sets none (``azure.max_response_mb``)."""


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ComputeClients(Generic[C]):
    """``make(credential, subscription_id, **kwargs)`` builds one client (``ComputeManagementClient``)."""

    def __init__(
        self,
        make: Callable[..., C],
        credential: Any,
        *,
        base_url: str | None = None,
        connection_verify: bool | str = True,
        polling_interval: float | None = None,
        max_response_mb: float = DEFAULT_MAX_RESPONSE_MB,
    ) -> None:
        self._make = make
        self._credential = credential
        self._base_url = base_url
        self._connection_verify = connection_verify
        self._polling_interval = polling_interval
        self._max_response_bytes = int(max_response_mb * 2**20)
        self._clients: dict[str, C] = {}
        self._lock = threading.Lock()

    def client(self, subscription_id: str) -> C:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                transport = RequestsTransport(
                    session=BoundedSession(self._max_response_bytes),
                    session_owner=True,
                    connection_verify=self._connection_verify,
                )
                kwargs: dict[str, Any] = {
                    "connection_verify": self._connection_verify,
                    "retry_total": 0,
                    "transport": transport,
                }
                if self._base_url is not None:
                    kwargs["base_url"] = self._base_url
                if self._polling_interval is not None:
                    kwargs["polling_interval"] = self._polling_interval
                client = self._make(self._credential, subscription_id, **kwargs)
                self._clients[subscription_id] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
