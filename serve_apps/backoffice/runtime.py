"""What every back-office Serve replica holds: connections, the identity service, the policy
engine, the audit client, the SSO providers and the player router. One per replica, built in
the deployment's constructor and bound for the routes by `deps.bind`."""

from __future__ import annotations

from actors.audit import AuditClient
from actors.router import PlayerRouter
from adapters.cassandra.adjustments import AdjustmentStore
from adapters.cassandra.apikeys import ApiKeyStore
from adapters.cassandra.parked_events import ParkedEvents
from adapters.cassandra.session import aexecute, connect
from adapters.cassandra.vip import VipAssignments
from adapters.oidc import OidcRegistry
from adapters.policy_file import get_engine
from adapters.rabbit import EventPublisher
from adapters.redis_pool import redis_client
from adapters.settings import Settings, get_settings
from domain.policy import PolicyEngine
from serve_apps.apikeys import KeyCache
from serve_apps.backoffice.identity import IdentityService


class BackOffice:
    def __init__(self, settings: Settings | None = None, *, with_players: bool = True) -> None:
        self.settings = settings or get_settings()
        self.cluster, self.session = connect(self.settings, self.settings.cassandra_keyspace)
        self.redis = redis_client(self.settings)
        self.identity = IdentityService(self.settings, self.session, self.redis)
        self.policy: PolicyEngine = get_engine()
        self.audit = AuditClient(self.settings)
        self.oidc = OidcRegistry(self.settings, self.redis)
        self.keys = ApiKeyStore(self.session)
        # The platform's keys, for the routes it calls in back-office apps (tickets, chats, experiments).
        self.key_cache = KeyCache(self.settings.api_key_cache_seconds)
        self.vip = VipAssignments(self.session)
        self.players = PlayerRouter(self.settings) if with_players else None
        self.adjustments = AdjustmentStore(self.session)
        # Pitboss's own back-office and help-desk decisions (adjustments, ticket events) go on the
        # bus from here; while the broker is down they are parked in Cassandra and the help-desk
        # worker publishes them later, so agents keep working through a broker outage.
        self.bus = EventPublisher(self.settings, ParkedEvents(self.session, self.settings.region))

    async def start(self) -> None:
        await self.identity.bootstrap_admin()

    async def probe_cassandra(self) -> None:
        await aexecute(self.session, "SELECT release_version FROM system.local", op="health")

    async def probe_redis(self) -> None:
        await self.redis.ping()

    async def probe_audit(self) -> dict[str, int]:
        head = await self.audit.head()
        return {"seq": head.seq if head else 0}

    def redirect_uri(self, provider: str) -> str:
        return f"{self.settings.public_base_url.rstrip('/')}/dashboard/sso/{provider}/callback"
