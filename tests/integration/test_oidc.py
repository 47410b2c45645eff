"""OpenID Connect sign-in against a real OpenID provider (oidc-provider-mock on loopback) and real Redis,
and forged ID tokens refused by `validate_id_token`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from oidc_provider_mock import run_server_in_thread

from adapters.oidc import STATE_KEY, OidcRegistry, map_identity, safe_return_to, validate_id_token
from adapters.settings import Settings
from domain.errors import Forbidden, NotFound, Unauthorized, Unavailable
from schemas.oidc import OidcProviderConfig

pytestmark = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")

REDIRECT_URI = "http://127.0.0.1:8000/dashboard/sso/{}/callback"
GROUP_ROLES = {
    "pitboss-admins": ["admin"],
    "pitboss-compliance": ["compliance_officer"],
    "pitboss-support": ["support_agent"],
    "pitboss-marketing": ["marketer"],
}


@pytest.fixture(scope="module")
def idp() -> Iterator[str]:
    """A real OpenID provider of our own on a free loopback port (independent of the launcher's)."""
    with run_server_in_thread(port=0) as server:
        yield f"http://127.0.0.1:{server.server_port}"


def provider_config(issuer: str, name: str = "test-idp", **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "display_name": "Test IdP",
        "issuer": issuer,
        "client_id": f"pitboss-{name}",
        "client_secret": "local-only-test-secret",
        "group_roles": GROUP_ROLES,
        "group_brands": {"brand-demo": ["demo"], "brand-luck": ["luck"]},
        "group_jurisdictions": {"pitboss-compliance": ["MT", "SE"]},
        "default_brands": ["demo"],
        "default_jurisdictions": ["*"],
    }
    config.update(overrides)
    return config


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(Settings().redis_url, socket_timeout=3)
    try:
        await client.ping()
    except aioredis.RedisError as exc:
        pytest.fail(f"the local stack's Redis does not answer ({exc}); start it with `make up`")
    yield client
    await client.aclose()


async def make_registry(redis: aioredis.Redis, *configs: dict[str, Any]) -> OidcRegistry:
    return OidcRegistry(Settings(oidc_providers=json.dumps(list(configs))), redis)


@pytest.fixture
async def registry(idp: str, redis: aioredis.Redis) -> AsyncIterator[OidcRegistry]:
    reg = await make_registry(redis, provider_config(idp), provider_config(idp, name="other-idp"))
    yield reg
    await reg.aclose()


async def put_user(idp: str, sub: str, **claims: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.put(f"{idp}/users/{sub}", json=claims)).raise_for_status()


async def browser_post(url: str, form: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, data=form)


async def authorize(url: str, sub: str) -> dict[str, str]:
    """What the operator's browser does at the provider: submit the form with a subject; the query
    of the callback URL the provider redirects back to."""
    response = await browser_post(url, {"sub": sub})
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith("http://127.0.0.1:8000/dashboard/sso/")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def new_user(idp: str, groups: list[str], **claims: Any) -> str:
    sub = f"user-{uuid.uuid4()}"
    await put_user(idp, sub, email=f"{sub}@idp.test", name="Test Operator", groups=groups, **claims)
    return sub


# ---------------------------------------------------------------------------------------------
# The whole flow


async def test_full_flow_maps_groups_to_roles_brands_and_jurisdictions(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-compliance", "pitboss-support", "brand-luck", "unrelated"])
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect, return_to="/dashboard/players?q=1")
    query = parse_qs(urlsplit(start.url).query)
    assert start.url.startswith(f"{idp}/oauth2/authorize?")
    assert query["state"] == [start.state] and query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == ["pitboss-test-idp"] and query["redirect_uri"] == [redirect]
    assert query["scope"] == ["openid email profile"] and query["nonce"][0]

    back = await authorize(start.url, sub)
    assert back["state"] == start.state
    identity, return_to = await registry.finish("test-idp", back["code"], back["state"], redirect)

    assert return_to == "/dashboard/players?q=1"
    assert identity.provider == "test-idp" and identity.subject == sub
    assert identity.email == f"{sub}@idp.test" and identity.name == "Test Operator"
    assert identity.groups == ["pitboss-compliance", "pitboss-support", "brand-luck", "unrelated"]
    assert identity.roles == ["compliance_officer", "support_agent"]
    assert identity.brands == ["luck"]
    assert identity.jurisdictions == ["MT", "SE"]
    assert identity.claims["iss"] == idp


async def test_pkce_verifier_and_nonce_are_kept_server_side_with_a_ttl(
    idp: str, registry: OidcRegistry, redis: aioredis.Redis
) -> None:
    start = await registry.start("test-idp", REDIRECT_URI.format("test-idp"))
    stored = await redis.get(STATE_KEY + start.state)
    assert stored is not None
    record = json.loads(stored)
    query = parse_qs(urlsplit(start.url).query)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(record["verifier"].encode()).digest()).rstrip(b"=").decode()
    assert query["code_challenge"] == [challenge]
    assert query["nonce"] == [record["nonce"]]
    assert record["verifier"] not in start.url
    assert 0 < await redis.ttl(STATE_KEY + start.state) <= 600


async def test_defaults_apply_when_no_group_grants_brands_or_jurisdictions(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-marketing"])
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect)
    back = await authorize(start.url, sub)
    identity, return_to = await registry.finish("test-idp", back["code"], back["state"], redirect)
    assert identity.roles == ["marketer"]
    assert identity.brands == ["demo"] and identity.jurisdictions == ["*"]
    assert return_to is None


async def test_operator_without_a_mapped_group_is_forbidden(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["everyone", "brand-demo"])
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect)
    back = await authorize(start.url, sub)
    with pytest.raises(Forbidden, match="no Pitboss role for your groups"):
        await registry.finish("test-idp", back["code"], back["state"], redirect)


async def test_operator_without_groups_claim_is_forbidden(idp: str, registry: OidcRegistry) -> None:
    sub = f"user-{uuid.uuid4()}"
    await put_user(idp, sub, email=f"{sub}@idp.test")
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect)
    back = await authorize(start.url, sub)
    with pytest.raises(Forbidden):
        await registry.finish("test-idp", back["code"], back["state"], redirect)


async def test_replayed_state_is_refused(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-admins"])
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect)
    back = await authorize(start.url, sub)
    identity, _ = await registry.finish("test-idp", back["code"], back["state"], redirect)
    assert identity.roles == ["admin"]
    with pytest.raises(Unauthorized) as caught:
        await registry.finish("test-idp", back["code"], back["state"], redirect)
    assert caught.value.field == "state"


async def test_state_of_another_provider_is_refused_and_consumed(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-admins"])
    start = await registry.start("test-idp", REDIRECT_URI.format("test-idp"))
    back = await authorize(start.url, sub)
    with pytest.raises(Unauthorized) as caught:
        await registry.finish("other-idp", back["code"], back["state"], REDIRECT_URI.format("other-idp"))
    assert caught.value.field == "state"
    with pytest.raises(Unauthorized):
        await registry.finish("test-idp", back["code"], back["state"], REDIRECT_URI.format("test-idp"))


@pytest.mark.parametrize("state", ["", "x", "A" * 43, "../../etc", "A" * 500])
async def test_unknown_or_malformed_state_is_refused(registry: OidcRegistry, state: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await registry.finish("test-idp", "some-code", state, REDIRECT_URI.format("test-idp"))
    assert caught.value.field == "state"


async def test_declined_sign_in_consumes_the_state(registry: OidcRegistry) -> None:
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect, return_to="/dashboard/queue")
    response = await browser_post(start.url, {"action": "deny"})
    assert response.status_code == 302
    assert "error=access_denied" in response.headers["location"]
    # This test IdP leaves the state out of its error redirect; real providers send it back.
    assert await registry.cancel("test-idp", start.state) == "/dashboard/queue"
    assert await registry.cancel("test-idp", start.state) is None
    with pytest.raises(Unauthorized):
        await registry.finish("test-idp", "any-code", start.state, redirect)


async def test_unknown_provider_is_not_found(registry: OidcRegistry) -> None:
    with pytest.raises(NotFound):
        await registry.start("nope", REDIRECT_URI.format("nope"))
    with pytest.raises(NotFound):
        await registry.finish("nope", "code", "A" * 43, REDIRECT_URI.format("nope"))


async def test_reused_code_is_refused_by_the_provider(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-admins"])
    redirect = REDIRECT_URI.format("test-idp")
    first = await authorize((await registry.start("test-idp", redirect)).url, sub)
    await registry.finish("test-idp", first["code"], first["state"], redirect)
    second = await registry.start("test-idp", redirect)
    with pytest.raises(Unauthorized) as caught:
        await registry.finish("test-idp", first["code"], second.state, redirect)
    assert caught.value.field == "code" and "invalid_grant" in caught.value.detail


async def test_code_of_another_sign_in_fails_the_nonce(idp: str, registry: OidcRegistry) -> None:
    # An attacker's own code injected into a victim's callback: the ID token's nonce is the attacker's.
    sub = await new_user(idp, ["pitboss-admins"])
    redirect = REDIRECT_URI.format("test-idp")
    attacker = await authorize((await registry.start("test-idp", redirect)).url, sub)
    victim = await registry.start("test-idp", redirect)
    with pytest.raises(Unauthorized, match="nonce"):
        await registry.finish("test-idp", attacker["code"], victim.state, redirect)


async def test_external_return_to_is_dropped(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-admins"])
    redirect = REDIRECT_URI.format("test-idp")
    start = await registry.start("test-idp", redirect, return_to="https://evil.example/")
    back = await authorize(start.url, sub)
    _, return_to = await registry.finish("test-idp", back["code"], back["state"], redirect)
    assert return_to is None


async def test_other_redirect_uri_is_refused(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-admins"])
    start = await registry.start("test-idp", REDIRECT_URI.format("test-idp"))
    back = await authorize(start.url, sub)
    with pytest.raises(Unauthorized):
        await registry.finish("test-idp", back["code"], back["state"], "http://127.0.0.1:8000/elsewhere")


async def test_rotated_provider_key_is_fetched_again(idp: str, registry: OidcRegistry) -> None:
    sub = await new_user(idp, ["pitboss-admins"])
    redirect = REDIRECT_URI.format("test-idp")
    await registry.start("test-idp", redirect)
    cached = registry._providers["test-idp"]
    stale = {"keys": [public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048), "old")]}

    # Keys fetched just now are not fetched again (a forged token must not make us hammer the provider).
    cached.jwks, cached.jwks_at = stale, time.monotonic()
    back = await authorize((await registry.start("test-idp", redirect)).url, sub)
    with pytest.raises(Unauthorized, match="signature"):
        await registry.finish("test-idp", back["code"], back["state"], redirect)

    cached.jwks, cached.jwks_at = stale, time.monotonic() - 120
    back = await authorize((await registry.start("test-idp", redirect)).url, sub)
    identity, _ = await registry.finish("test-idp", back["code"], back["state"], redirect)
    assert identity.subject == sub
    assert cached.jwks is not stale


async def test_unreachable_provider_is_unavailable(redis: aioredis.Redis) -> None:
    with socket_port() as port:
        reg = await make_registry(redis, provider_config(f"http://127.0.0.1:{port}"))
        with pytest.raises(Unavailable, match="discovery"):
            await reg.start("test-idp", REDIRECT_URI.format("test-idp"))
        await reg.aclose()


async def test_discovery_with_another_issuer_is_unavailable(idp: str, redis: aioredis.Redis) -> None:
    reg = await make_registry(redis, provider_config(idp + "/"))
    with pytest.raises(Unavailable, match="issuer"):
        await reg.start("test-idp", REDIRECT_URI.format("test-idp"))
    await reg.aclose()


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listened)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Forged ID tokens

ISSUER = "https://idp.example.com"
CLIENT = "pitboss"
NONCE = "n-0S6_WzA2Mj"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALGS = ["RS256", "ES256", "PS256", "EdDSA"]


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    return {**jwk, "kid": kid}


@pytest.fixture(scope="module")
def signer() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(signer: rsa.RSAPrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(signer, "k1")]}


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "operator-1",
        "aud": CLIENT,
        "iat": int(NOW.timestamp()) - 10,
        "exp": int(NOW.timestamp()) + 300,
        "nonce": NONCE,
        "groups": ["pitboss-admins"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, body: dict[str, Any], kid: str | None = "k1", alg: str = "RS256") -> str:
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def check(token: str, jwks: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "jwks": jwks,
        "issuer": ISSUER,
        "client_id": CLIENT,
        "nonce": NONCE,
        "algorithms": ALGS,
        "leeway": 60,
        "now": NOW,
    }
    args.update(overrides)
    return validate_id_token(token, **args)


def refused(token: str, jwks: dict[str, Any], what: str, **overrides: Any) -> None:
    with pytest.raises(Unauthorized) as caught:
        check(token, jwks, **overrides)
    assert what in caught.value.detail, caught.value.detail
    assert caught.value.field == "id_token"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_genuine_token_is_accepted(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    assert check(sign(signer, claims()), jwks)["sub"] == "operator-1"


def test_token_without_kid_is_checked_against_the_fitting_keys(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    assert check(sign(signer, claims(), kid=None), jwks)["sub"] == "operator-1"


def test_token_signed_with_another_key_under_the_same_kid_is_refused(jwks: dict[str, Any]) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(sign(forger, claims()), jwks, "ID token signature")


def test_token_with_unknown_kid_is_refused(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    refused(sign(signer, claims(), kid="k2"), jwks, "ID token signature")


def test_wrong_audience_is_refused(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    refused(sign(signer, claims(aud="someone-else")), jwks, "audience")
    refused(sign(signer, claims(aud=None)), jwks, "audience")


def test_several_audiences_need_azp_naming_us(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    refused(sign(signer, claims(aud=[CLIENT, "other"])), jwks, "azp")
    refused(sign(signer, claims(aud=[CLIENT, "other"], azp="other")), jwks, "azp")
    assert check(sign(signer, claims(aud=[CLIENT, "other"], azp=CLIENT)), jwks)["azp"] == CLIENT
    refused(sign(signer, claims(azp="other")), jwks, "azp")


def test_wrong_issuer_is_refused(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    refused(sign(signer, claims(iss="https://evil.example.com")), jwks, "issuer")
    refused(sign(signer, claims(iss=ISSUER + "/")), jwks, "issuer")


def test_wrong_nonce_is_refused(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    refused(sign(signer, claims(nonce="replayed")), jwks, "nonce")
    refused(sign(signer, claims(nonce=None)), jwks, "nonce")


def test_expired_token_is_refused_beyond_the_leeway(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    exp = int(NOW.timestamp()) - 61
    refused(sign(signer, claims(exp=exp, iat=exp - 300)), jwks, "expired")
    assert check(sign(signer, claims(exp=exp + 2, iat=exp - 300)), jwks)
    refused(sign(signer, claims(exp=None)), jwks, "exp")


def test_token_issued_in_the_future_is_refused(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    refused(sign(signer, claims(iat=int(NOW.timestamp()) + 120)), jwks, "iat")
    refused(sign(signer, claims(iat=None)), jwks, "iat")
    refused(sign(signer, claims(nbf=int(NOW.timestamp()) + 120)), jwks, "nbf")


def test_unsigned_token_is_refused(jwks: dict[str, Any]) -> None:
    header = b64(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    refused(f"{header}.{body}.", jwks, "ID token signature")
    refused(f"{header}.{body}.", jwks, "ID token signature", algorithms=["none", *ALGS])


def test_hs256_signed_with_the_public_key_is_refused(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    # The classic key-confusion forgery: HMAC keyed with the provider's public key, which anyone has.
    pem = signer.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(claims()).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(mac)}"
    refused(forged, jwks, "ID token signature")
    refused(forged, jwks, "ID token signature", algorithms=["HS256", *ALGS])


def test_algorithm_must_fit_the_key(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    # Allowed by configuration but not by the key, which says it is for RS256 only.
    pinned = {"keys": [{**jwks["keys"][0], "alg": "RS256"}]}
    refused(sign(signer, claims(), alg="PS256"), pinned, "ID token signature")
    assert check(sign(signer, claims(), alg="PS256"), jwks)
    # Allowed by the key but not by configuration.
    refused(sign(signer, claims(), alg="RS512"), jwks, "ID token signature")


def test_ec_key_verifies_es256_and_not_rs256(signer: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = {"keys": [public_jwk(ec_key, "e1"), public_jwk(signer, "k1")]}
    assert check(sign(ec_key, claims(), kid="e1", alg="ES256"), keys)
    refused(sign(signer, claims(), kid="e1"), keys, "ID token signature")


def test_malformed_token_is_refused(jwks: dict[str, Any]) -> None:
    refused("not-a-jwt", jwks, "ID token signature")


# ---------------------------------------------------------------------------------------------
# Pure helpers


def local_config() -> OidcProviderConfig:
    return OidcProviderConfig.model_validate(provider_config("http://127.0.0.1:9400"))


@given(st.lists(st.sampled_from([*GROUP_ROLES, "brand-demo", "brand-luck", "x", "pitboss-compliance"]), max_size=6))
def test_roles_are_the_union_of_the_groups_mappings(groups: list[str]) -> None:
    config = local_config()
    expected = {role for g in groups for role in GROUP_ROLES.get(g, [])}
    body = {"sub": "s", "groups": groups}
    if not expected:
        with pytest.raises(Forbidden):
            map_identity(config, body)
        return
    identity = map_identity(config, body)
    assert set(identity.roles) == expected and len(identity.roles) == len(expected)
    granted = {b for g in groups for b in config.group_brands.get(g, [])}
    assert set(identity.brands) == (granted or {"demo"})
    assert identity.jurisdictions == (["MT", "SE"] if "pitboss-compliance" in groups else ["*"])


def test_groups_claim_may_be_a_nested_path_or_a_single_string() -> None:
    config = OidcProviderConfig.model_validate(
        provider_config("http://127.0.0.1:9400", groups_claim="realm_access.roles")
    )
    identity = map_identity(config, {"sub": "s", "realm_access": {"roles": ["pitboss-admins"]}})
    assert identity.roles == ["admin"]
    assert map_identity(local_config(), {"sub": "s", "groups": "pitboss-support"}).roles == ["support_agent"]


@given(st.text(max_size=60))
def test_return_to_is_a_local_path_or_nothing(value: str) -> None:
    kept = safe_return_to(value)
    if kept is not None:
        parts = urlsplit(kept)
        assert kept.startswith("/") and not kept.startswith("//")
        assert not parts.scheme and not parts.netloc


@pytest.mark.parametrize(
    "value",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "/a\r\nLocation: x", ""],
)
def test_return_to_refuses_other_sites(value: str) -> None:
    assert safe_return_to(value) is None


def test_return_to_keeps_dashboard_paths() -> None:
    assert safe_return_to("/dashboard/players/1?tab=limits#top") == "/dashboard/players/1?tab=limits#top"


def test_leeway_window_is_symmetric_for_now_argument(signer: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    token = sign(signer, claims())
    assert check(token, jwks, now=NOW + timedelta(seconds=300 + 59))
    refused(token, jwks, "expired", now=NOW + timedelta(seconds=300 + 61))
