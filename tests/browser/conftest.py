"""Browser tests run against the same local stack as the integration tests."""

from tests.integration.conftest import ops, stack

__all__ = ["ops", "stack"]
