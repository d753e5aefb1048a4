"""Fixtures for the replica tests: a real redis-server per session (and private ones for fault tests)."""

from tests.support.redis import redis_factory, redis_server, redis_url  # noqa: F401  (fixtures, used by name)
