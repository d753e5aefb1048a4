"""Where the model cache keeps its models and refit schedule beyond its own memory.

The cache (:mod:`forecasting.cache`) always holds the models it serves in memory. A :class:`ModelStore` is what
it writes through to and reads from, so that a restart, or another process sharing the store, serves the same
model without fitting it again:

- :class:`FileModelStore` (``persist_dir``): one versioned JSON file per key, written atomically. One process.
- a shared store (the scaler's Redis store, outside this library): models with a *generation* that only goes
  up, and a refit schedule with expiring claims so that each refit is done once across all processes.

Every model crosses the boundary as the versioned JSON of :meth:`ServingModel.to_json` (see
:func:`model_to_text` and :func:`model_from_text`), whatever the medium.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from forecasting.serving import ServingModel

log = structlog.get_logger("forecasting.store")


class StoreUnavailable(Exception):
    """Transient: the store cannot be reached now. The cache keeps serving what it holds and retries later."""


@dataclass(frozen=True, slots=True)
class StoredModel:
    generation: int
    """Starts at 1 and only goes up for a key: a writer never replaces a newer generation."""
    model: ServingModel


@dataclass(frozen=True, slots=True)
class FitClaim:
    """The right to fit ``key`` now, until ``token``'s claim expires (the store renews it while the fit runs)."""

    key: str
    token: str


@dataclass(frozen=True, slots=True)
class NotDue:
    """Another process fits ``key`` or fitted it recently: the next try is due at ``due_at``."""

    due_at: float


class ModelStore(Protocol):
    """What :class:`forecasting.cache.ModelCache` needs beyond its memory."""

    @property
    def shared(self) -> bool:
        """True when other processes share the store (then fits are claimed before they run)."""
        ...

    def load(self, key: str) -> StoredModel | None:
        """The stored model of ``key`` (None when there is none or it cannot be read). May raise StoreUnavailable."""
        ...

    def save(self, key: str, model: ServingModel, generation: int) -> int:
        """Store ``model`` as ``generation`` unless a generation >= it is stored; returns the generation that is
        stored afterwards (``generation`` when written). May raise StoreUnavailable."""
        ...

    def claim_fit(self, key: str, now: float) -> FitClaim | NotDue:
        """Claim the refit of ``key`` when it is due at ``now`` and nobody holds it. May raise StoreUnavailable."""
        ...

    def finish_fit(self, claim: FitClaim, next_due_at: float) -> None:
        """Set when ``claim.key`` is due next and release the claim. May raise StoreUnavailable."""
        ...

    def request_fit(self, key: str, now: float) -> None:
        """Make ``key`` due at ``now`` (a refit asked for early). May raise StoreUnavailable."""
        ...

    def forget(self, key: str) -> None:
        """The process stops keeping ``key``: a store shared with others keeps it for them."""
        ...


def model_to_text(model: ServingModel) -> str:
    return json.dumps(model.to_json(), separators=(",", ":"))


def model_from_text(key: str, text: str | bytes) -> ServingModel:
    """The model in ``text``; ValueError (with the reason) when it is not a model of ``key`` in this format."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    model = ServingModel.from_json(doc)  # ServingFormatError is a ValueError
    if model.key != key:
        raise ValueError(f"the stored model is of another key: {model.key!r}")
    return model


class LocalFits:
    """Fit coordination for a store of one process: every fit is its own to do, nothing to hand back."""

    def claim_fit(self, key: str, now: float) -> FitClaim | NotDue:
        return FitClaim(key=key, token="")

    def finish_fit(self, claim: FitClaim, next_due_at: float) -> None:
        return None

    def request_fit(self, key: str, now: float) -> None:
        return None

    def forget(self, key: str) -> None:
        return None


class FileModelStore(LocalFits):
    """Models as ``<directory>/<sha256(key)[:32]>.json`` (written to a temporary file and renamed, so a reader never
    sees half a file), for one process. The generation is not kept on disk: a loaded model is generation 1."""

    shared = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def load(self, key: str) -> StoredModel | None:
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable persisted model", key=key, path=str(path), error=str(exc))
            return None
        try:
            model = model_from_text(key, text)
        except ValueError as exc:  # json.JSONDecodeError and ServingFormatError are ValueErrors
            log.warning("ignoring persisted model", key=key, path=str(path), error=str(exc))
            return None
        log.info("loaded persisted model", key=key, path=str(path), fitted_at=model.fitted_at)
        return StoredModel(generation=1, model=model)

    def save(self, key: str, model: ServingModel, generation: int) -> int:
        """Raises OSError, TypeError or ValueError when the file cannot be written (the cache counts it)."""
        path = self.path(key)
        tmp_name: str | None = None
        try:
            text = model_to_text(model)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False
            ) as fh:
                tmp_name = fh.name
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        return generation


__all__ = [
    "FileModelStore",
    "FitClaim",
    "LocalFits",
    "ModelStore",
    "NotDue",
    "StoreUnavailable",
    "StoredModel",
    "model_from_text",
    "model_to_text",
]
