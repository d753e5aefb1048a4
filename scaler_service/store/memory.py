"""The store of a single replica (``--store memory``, the default): nothing is shared.

Every fetch and fit claim is granted at once, series state stays in the engine, and models are kept by the
model cache (written through to ``--persist-dir`` when it is set, so a restart serves at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from forecasting.serving import ServingModel
from forecasting.store import FileModelStore, LocalFits, NotDue, StoredModel
from scaler_service.store.base import FetchClaim, StoreMode
from scaler_service.store.state import SeriesState


class MemoryStore(LocalFits):
    shared = False
    leases_lost_total = 0

    def __init__(self, persist_dir: Path | None = None) -> None:
        self._files = None if persist_dir is None else FileModelStore(persist_dir)

    # --- the engine's side ---------------------------------------------------------------------------

    def register_series(self, series_id: str, now: float) -> None:
        return None

    def claim_fetch(self, series_id: str, now: float) -> FetchClaim | NotDue:
        return FetchClaim(series_id=series_id, token="")

    def publish_state(self, claim: FetchClaim, state: SeriesState, next_due_at: float) -> bool:
        return True

    def load_states(self, series_ids: Iterable[str]) -> dict[str, SeriesState]:
        return {}

    def changed_since(self, cursor: int) -> tuple[int, list[str]]:
        return cursor, []

    def model_generations(self, series_ids: Iterable[str]) -> dict[str, int]:
        return {}

    def mode(self, now: float) -> StoreMode:
        return StoreMode.LOCAL

    def describe(self, now: float) -> str:
        return "store: memory (one replica, nothing shared)"

    def close(self) -> None:
        return None

    # --- the model cache's side --------------------------------------------------------------------

    def load(self, key: str) -> StoredModel | None:
        return None if self._files is None else self._files.load(key)

    def save(self, key: str, model: ServingModel, generation: int) -> int:
        return generation if self._files is None else self._files.save(key, model, generation)


__all__ = ["MemoryStore"]
