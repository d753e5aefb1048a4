from tests.support.prometheus import prometheus_factory  # noqa: F401  (fixture, used by name)
