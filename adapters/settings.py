"""All configuration, from `PITBOSS_*` environment variables.

Defaults are for the local stack only (loopback services, demo API key); production sets
every one of them.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PITBOSS_", extra="ignore")

    region: str = "eu"
    # Every region this deployment knows; keyspaces replicate to each.
    cassandra_contact_points: str = "127.0.0.1"
    cassandra_port: int = 9042
    cassandra_local_dc: str = "eu"
    cassandra_keyspace: str = "pitboss"
    # "dc:rf,dc:rf" for NetworkTopologyStrategy. Local default: one replica in `eu`.
    cassandra_replication: str = "eu:1"
    # Cassandra 2.1 (the local stack) speaks native protocol v3; production 4.x/5.x may set 4 or 5.
    cassandra_protocol_version: int = Field(default=3, ge=3, le=5)
    cassandra_username: str | None = None
    cassandra_password: str | None = None

    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"  # guest/guest: local only
    events_exchange: str = "pitboss.events"
    events_queue: str = "pitboss.platform-events"
    consumers: int = Field(default=1, ge=0, le=64)
    consumer_batch: int = Field(default=500, ge=1, le=5000)
    consumer_flush_ms: int = Field(default=20, ge=1, le=5000)

    ray_address: str = "auto"
    ray_namespace: str = "pitboss"

    shards: int = Field(default=2, ge=1, le=1024)
    shard_active_cap: int = Field(default=60_000, ge=1)
    shard_idle_seconds: float = Field(default=900.0, gt=0)
    snapshot_every: int = Field(default=50, ge=1)
    lease_seconds: float = Field(default=15.0, gt=1)
    cassandra_max_in_flight: int = Field(default=256, ge=1)
    lease_serial_consistency: str = "SERIAL"

    # "brand:key,brand:key" installed at start if absent. The default is a local-only demo key.
    bootstrap_api_keys: str = "demo:local-only-demo-key"
    api_key_cache_seconds: float = 10.0
    max_body_bytes: int = 2 * 1024 * 1024

    # --- Operators, sessions, SSO, audit (the back office) ---
    # Base URL operators reach the dashboard at; OIDC redirect URIs are built from it.
    public_base_url: str = "http://127.0.0.1:8000"
    # Encrypts TOTP secrets at rest and derives other local secrets. Local-only default.
    secret_key: str = "local-only-secret-key-change-me-in-production"
    # "username:password" of the first admin, created if no operator exists. Local-only default;
    # the admin must still enrol a second factor at first login.
    bootstrap_admin: str = "admin:local-only-admin-password"
    session_idle_seconds: int = Field(default=30 * 60, ge=60)
    session_absolute_seconds: int = Field(default=12 * 3600, ge=300)
    # Browsers treat http://127.0.0.1 and localhost as secure contexts, so Secure cookies work locally too.
    cookie_secure: bool = True
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    login_lock_seconds: int = Field(default=15 * 60, ge=1)
    # Addresses/networks of the proxies in front of the replicas (Serve's HAProxy, a load balancer).
    # A request from one of them is attributed to the last address it appended to X-Forwarded-For;
    # the proxy's own address is never locked out, or one attacker would lock out every operator.
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    # JSON list of OpenID Connect providers, each an `OidcProviderConfig` (schemas/oidc.py).
    oidc_providers: str = "[]"
    # Policy file (RBAC and ABAC as data); the packaged default when empty.
    policy_file: str = ""
    # HMAC-SHA256 key of the audit chain's signed anchors. Local-only default.
    audit_anchor_key: str = "local-only-audit-anchor-key"
    audit_anchor_every: int = Field(default=1000, ge=1)
    audit_anchor_seconds: float = Field(default=60.0, gt=0)

    def trusted_networks(self) -> list[IPv4Network | IPv6Network]:
        return [ip_network(p.strip(), strict=False) for p in self.trusted_proxies.split(",") if p.strip()]

    def replication_map(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.cassandra_replication.split(","):
            dc, _, rf = part.strip().partition(":")
            out[dc] = int(rf or "1")
        return out

    def contact_points(self) -> list[str]:
        return [h.strip() for h in self.cassandra_contact_points.split(",") if h.strip()]

    def bootstrap_keys(self) -> list[tuple[str, str]]:
        pairs = []
        for part in self.bootstrap_api_keys.split(","):
            brand, _, key = part.strip().partition(":")
            if brand and key:
                pairs.append((brand, key))
        return pairs


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
