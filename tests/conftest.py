"""Settings for the whole suite."""

from hypothesis import HealthCheck, settings

# The suite shares two cores with Cassandra, Ray and a browser: generation speed and per-example
# time say nothing about the rules under test, so neither may fail a test.
settings.register_profile("pitboss", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pitboss")
