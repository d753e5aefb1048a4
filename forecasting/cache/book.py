"""What the model cache holds: its entries in LRU order, their bytes, and when each is due, under one lock."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from forecasting.cache.records import CacheEntry, CacheSettings
from forecasting.cache.schedule import DueQueue
from forecasting.serving import ServingModel
from forecasting.store import StoredModel


class ModelBook:
    """The cache's state shared by serving, registration and the fit runner.

    ``lock`` is only ever held for a few dictionary operations, never during a fit or any I/O; ``changed``
    (on the same lock) is notified when fits finish or keys come and go.
    """

    def __init__(self, settings: CacheSettings, log: Any) -> None:
        self.settings = settings
        self._log = log
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()  # least recently used first
        self.schedule = DueQueue(self.entries)
        self.bytes = 0
        self.evictions_total = 0

    def set_model(self, entry: CacheEntry, model: ServingModel, generation: int) -> None:
        """Make ``model`` the one ``entry`` serves. The lock is held."""
        self.bytes += model.nbytes - entry.nbytes
        entry.model = model
        entry.generation = generation
        entry.nbytes = model.nbytes

    def adopt(self, key: str, stored: StoredModel) -> bool:
        """Take a model another process stored, when ``key`` is registered and ``stored`` is a newer generation."""
        if stored.model.key != key:
            return False
        with self.changed:
            entry = self.entries.get(key)
            if entry is None or stored.generation <= entry.generation:
                return False
            self.set_model(entry, stored.model, stored.generation)
            self.evict(keep=key)
        return True

    def evict(self, keep: str | None) -> None:
        """Drop least recently used entries (never ``keep``) until the bounds hold. The lock is held."""
        s = self.settings
        while len(self.entries) > s.max_entries or self.bytes > s.max_bytes:
            victim: str | None = None
            for k in self.entries:  # least recently used first; stops at the first or second key
                if k != keep:
                    victim = k
                    break
            if victim is None:
                self._log.warning(
                    "model larger than the cache's byte budget kept alone",
                    key=keep,
                    bytes=self.bytes,
                    max_bytes=s.max_bytes,
                )
                return
            reason = "count" if len(self.entries) > s.max_entries else "bytes"
            entry = self.entries.pop(victim)
            self.bytes -= entry.nbytes
            self.evictions_total += 1
            self._log.info("model cache evicted", key=victim, reason=reason, bytes=entry.nbytes)


__all__ = ["ModelBook"]
