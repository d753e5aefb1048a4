"""The model cache's storage beyond memory: reading and writing stored models through a ModelStore.

With ``persist_dir`` alone the store is a :class:`~forecasting.store.FileModelStore`
(``<persist_dir>/<sha256(key)[:32]>.json``, the versioned JSON of ``ServingModel.to_json()``, written
atomically); or a store given by the caller, which other processes may share. A store that fails never fails a
fit or a registration: the failure is counted and logged, and the model stays in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from forecasting.serving import ServingModel
from forecasting.store import FileModelStore, ModelStore, StoredModel, StoreUnavailable


class ModelPersistence:
    def __init__(self, store: ModelStore | None, log: Any) -> None:
        self.store = store
        self._log = log
        self._lock = threading.Lock()
        self.failures_total = 0
        """Models that could not be stored."""

    @property
    def shared(self) -> bool:
        """True when other processes share the store (fits are claimed there first)."""
        return self.store is not None and self.store.shared

    @property
    def shared_store(self) -> ModelStore | None:
        """The store when other processes share it, else None."""
        return self.store if self.store is not None and self.store.shared else None

    def path(self, key: str) -> Path | None:
        """Where the model for ``key`` is persisted (None unless the store is a directory of files)."""
        return self.store.path(key) if isinstance(self.store, FileModelStore) else None

    def save(self, key: str, model: ServingModel, generation: int) -> int:
        """Store ``model``; returns the generation stored afterwards (``generation`` also when storing failed)."""
        if self.store is None:
            return generation
        try:
            return self.store.save(key, model, generation)
        except (OSError, TypeError, ValueError, StoreUnavailable) as exc:
            with self._lock:
                self.failures_total += 1
            self._log.warning("could not store model", key=key, store=repr(self.store), error=str(exc))
            return generation

    def load(self, key: str) -> StoredModel | None:
        if self.store is None:
            return None
        try:
            return self.store.load(key)
        except StoreUnavailable as exc:
            self._log.info("stored model not read: the store is unreachable", key=key, error=str(exc))
            return None


__all__ = ["ModelPersistence"]
