"""Data sources the scaler reads series through: Prometheus and the replay of a bundled trace."""

from scaler_service.sources.base import DataSource, QueryError, Samples, SourceError, SourceUnavailable

__all__ = ["DataSource", "QueryError", "Samples", "SourceError", "SourceUnavailable"]
