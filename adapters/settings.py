"""All configuration, from `PITBOSS_*` environment variables.

Defaults are for the local stack only (loopback services, demo API key); production sets
every one of them.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal

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
    # Longest pause between the driver's attempts to reach a node it saw go down (from 0.5 s,
    # doubling). The driver's own default grows to 10 minutes: a node back after 30 s stayed
    # unused for another 30 s.
    cassandra_reconnect_max_seconds: float = Field(default=2.0, ge=0.5, le=600)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Connections per client pool, and how long a command waits for one before it fails.
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
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

    # --- Help desk: tickets, routing, presence, phone webhook ---
    # Teams and routing rules (YAML, schemas/helpdesk_routing.py); the packaged
    # cluster/helpdesk/routing.yaml when empty.
    helpdesk_routing_file: str = ""
    # An agent whose dashboard stopped sending heartbeats for this long is no longer available.
    helpdesk_presence_ttl_seconds: int = Field(default=90, ge=10)
    # How long a replica trusts a player's brand and country it read for a platform (API-key) call,
    # instead of asking the player's actor again; operators' calls always read the live profile.
    helpdesk_player_cache_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Shared secret of the telephony provider's webhook signatures (HMAC-SHA256). Local-only default.
    phone_webhook_secret: str = "local-only-phone-webhook-secret"
    # A signed phone event older or newer than this is refused (replay protection).
    phone_webhook_tolerance_seconds: int = Field(default=300, ge=1)

    # --- Help desk email channel (serve_apps/helpdesk_mail) ---
    # Outbound relay for agents' replies. Local-only default: the stack's mail sink on loopback.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2526, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    # Attempts per reply (exponential backoff with jitter between them) before it is dead-lettered.
    smtp_max_attempts: int = Field(default=4, ge=1, le=20)
    smtp_backoff_seconds: float = Field(default=1.0, gt=0)
    # The help desk's address (From of replies). Local-only default.
    helpdesk_mail_from: str = "support@help.pitboss.local"
    helpdesk_mail_from_name: str = "Support"
    # Right side of the Message-IDs Pitboss writes. Local-only default.
    helpdesk_mail_domain: str = "help.pitboss.local"
    # "brand:domain,..." recipient domains the listener accepts and the brand of the tickets they open.
    # Local-only default.
    helpdesk_mail_brands: str = "demo:help.pitboss.local"
    # The inbound SMTP listener (behind the organisation's MTA); loopback by default.
    smtp_inbound_host: str = "127.0.0.1"
    smtp_inbound_port: int = Field(default=2525, ge=1, le=65535)
    smtp_inbound_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    smtp_inbound_max_recipients: int = Field(default=50, ge=1)
    # authserv-id of the MTA in front of the listener: only its Authentication-Results header counts,
    # and a dmarc=fail there is refused (550). Empty: no header is trusted, nothing is refused for DMARC.
    smtp_trusted_authserv_id: str = "mx.pitboss.local"
    # The durable queue of ticket.message_added events that the mail gateway sends replies from.
    helpdesk_mail_queue: str = "pitboss.helpdesk-mail"

    # --- Help desk live chat (serve_apps/helpdesk/routes_chat.py) ---
    # Lifetime of the token a player's browser opens its chat socket with; the platform asks for a
    # new one (POST /helpdesk/v1/chat/sessions, same chat_id) when it runs out. The token is signed
    # with a key derived from secret_key.
    chat_token_seconds: int = Field(default=15 * 60, ge=30, le=24 * 3600)
    # Longest chat line in characters (a line becomes a ticket message, whose limit is 20000).
    chat_max_message_chars: int = Field(default=2000, ge=1, le=20_000)
    # Chat lines one socket may send: sustained per second, and in a burst.
    chat_rate_per_second: float = Field(default=5.0, gt=0)
    chat_rate_burst: int = Field(default=20, ge=1)
    # Seconds a chat's new lines wait before they are copied into its ticket together: one ticket
    # commit per chat per wait instead of one per line (the lines are durable in chat_lines already).
    chat_copy_seconds: float = Field(default=5.0, ge=0.0, le=600.0)
    # Copies a help-desk worker replica starts per second at most: under load the wait grows and each
    # copy takes more lines, so copying never crowds out the live writes. A copy (10 lines) costs
    # about 80 ms of CPU across the box (ticket LWT, indexes, events and their consumers); on the
    # 2-core box, 10/s put chat delivery p99 at 445 ms at 100 lines/s, 4/s at 88 ms.
    chat_copies_per_second: float = Field(default=3.0, gt=0.0, le=1000.0)

    # --- Segmentation service (serve_apps/segments) ---
    # How long the service waits for the region's segment engine (preview, materialise, membership).
    segments_call_timeout_seconds: float = Field(default=20.0, gt=0)
    # Most rows one CSV export streams; a larger segment is refused with 422 (split it first).
    segments_export_max_rows: int = Field(default=1_000_000, ge=1)
    # Most members `GET /experiments/{key}/split` reads to count the groups.
    segments_split_max_members: int = Field(default=2_000_000, ge=1)

    # --- Help desk SLA (actors/helpdesk_sla.py) ---
    # SLA policies and business calendars (YAML, an SlaPolicySet of schemas/helpdesk_sla.py); the
    # packaged cluster/helpdesk/sla.yaml when empty. A file that does not validate stops the start.
    helpdesk_sla_file: str = ""
    # Seconds between two scans of the open SLA clocks by the region's scheduler actor.
    helpdesk_sla_scan_seconds: float = Field(default=15.0, gt=0, le=3600)
    # Seconds between two reads of the whole open-clock index; the scans in between read only the
    # clocks changed since the last one (the change feed). The whole read repairs a lost change.
    helpdesk_sla_full_scan_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # A solved ticket is closed this many days after it was solved (0: at the next scan).
    helpdesk_autoclose_days: int = Field(default=7, ge=0, le=365)
    # Team a ticket is reassigned to when one of its SLA targets is breached (its assignee is kept);
    # empty: the ticket keeps its team and is only tagged and announced.
    helpdesk_sla_escalation_team: str = "supervisors"
    # Supervisor alerts kept per brand in the Redis list pitboss:helpdesk:alerts:<brand> (newest first).
    helpdesk_sla_alerts_max: int = Field(default=1000, ge=1, le=100_000)
    # "brand,brand": the brands this region's scheduler watches; empty: every brand.
    helpdesk_sla_brands: str = ""

    # --- Help desk knowledge base, reply templates, KPIs (serve_apps/helpdesk/kb.py) ---
    # Seconds between two polls of the article change log by each replica: the fallback when a
    # Redis announcement was missed, so two replicas agree within about this long.
    kb_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Public FAQ requests (search and article reads together) one client address may make per minute.
    faq_rate_per_minute: int = Field(default=120, ge=1)
    # Most tickets one KPI request reads (the period's and the backlog); a larger scan is refused (422).
    kpi_max_tickets: int = Field(default=50_000, ge=1)

    # --- Segment engine: player features, materialised segments, churn model (actors/segments.py) ---
    # Buckets of the player_features table (and churn scores, activity) per region: a rebuild scans them
    # in parallel. Fixed once rows exist: changing it strands the rows written under the old count.
    segment_feature_buckets: int = Field(default=64, ge=1, le=4096)
    # A shard writes a changed player's feature row at most once per this interval (coalesced).
    segment_feature_flush_ms: int = Field(default=200, ge=10, le=60_000)
    # The engine re-reads every feature row from Cassandra this often, repairing a lost push.
    segment_catchup_seconds: float = Field(default=300.0, ge=5)
    # Materialised segments are re-evaluated in full this often (time windows move with the clock).
    segment_refresh_seconds: float = Field(default=60.0, ge=1)
    # At most one size sample per segment per this interval (plus one at every materialise).
    segment_size_sample_seconds: float = Field(default=300.0, ge=1)
    # The churn model is retrained from the players' daily activity this often (default daily).
    churn_retrain_seconds: float = Field(default=86_400.0, ge=60)

    # --- Help desk: linking email tickets to players (serve_apps/helpdesk_mail, serve_apps/helpdesk/contacts.py) ---
    # When the mail gateway opens a new email ticket for the player whose profile has the From address:
    # "dmarc_pass" only when the trusted MTA's Authentication-Results says dmarc=pass (the From domain is
    # authenticated); "unless_dmarc_fail" also when there is no verdict or it is none/neutral/... (a From
    # address of a domain without a DMARC policy can be forged); "off" never (agents link every ticket).
    helpdesk_mail_link_players: Literal["dmarc_pass", "unless_dmarc_fail", "off"] = "dmarc_pass"

    # --- Help desk KPI facts (serve_apps/helpdesk/kpi_facts.py) ---
    # Each help-desk replica consumes the ticket events from this durable queue (dead letters in
    # <queue>.dlq) and keeps one KPI fact row per ticket current (schemas/cql/016).
    helpdesk_kpi_queue: str = "pitboss.helpdesk-kpis"
    # Whether the help-desk replicas run that consumer (off: KPIs count only backfilled days' facts).
    helpdesk_kpi_consumer: bool = True
    # Day partitions of the fact table one KPI request reads at once.
    kpi_day_concurrency: int = Field(default=8, ge=1, le=64)
    # Each help-desk replica consumes ticket.assigned from this durable queue to tell agents' open chat
    # consoles about reassigned chats (serve_apps/helpdesk/chat_moves.py).
    helpdesk_chat_moves_queue: str = "pitboss.helpdesk-chat-moves"

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
