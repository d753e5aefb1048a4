"""The model cache: one fitted model per series, refitted in the background (see :mod:`forecasting.cache.core`).

``records`` holds the settings and what the cache reports, ``schedule`` when each key is fitted next,
``persistence`` the storage beyond memory, ``core`` the cache itself.
"""

from forecasting.cache.core import ModelCache
from forecasting.cache.records import CacheSettings, CacheStats, EntryStatus, FitFunction, FitOutcome

__all__ = [
    "CacheSettings",
    "CacheStats",
    "EntryStatus",
    "FitFunction",
    "FitOutcome",
    "ModelCache",
]
