"""OpenID Connect relying party: operators sign in through their company's identity provider.

Authorization code flow with PKCE (S256), `state` and `nonce`. The one-time state record lives in
Redis (any replica may receive the callback), is consumed with GETDEL and expires after 10
minutes. The ID token is checked against the provider's JWKS (asymmetric algorithms only), its
issuer, audience, `azp`, expiry and issue time (with a small leeway) and the nonce. The operator's
groups are mapped to Pitboss roles, brands and jurisdictions by configuration; someone whose
groups give no role is refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
import jwt
import redis.asyncio as aioredis

from adapters.settings import Settings
from domain.errors import Forbidden, NotFound, Unauthorized, Unavailable
from schemas.oidc import SUPPORTED_ALGORITHMS, OidcProviderConfig, parse_providers

STATE_TTL_SECONDS = 600
DISCOVERY_TTL_SECONDS = 3600.0
# A token signed with a key we do not know makes us refetch the JWKS (key rotation), but at most
# this often per provider: otherwise forged tokens with random kids would hammer the provider.
JWKS_REFETCH_SECONDS = 60.0
STATE_KEY = "pitboss:oidc:state:"
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_STATE_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,128}")
_MAX_RETURN_TO = 2000

# Key types (and curves) each algorithm can be verified with.
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


@dataclass(frozen=True)
class SsoStart:
    url: str
    state: str


@dataclass(frozen=True)
class SsoIdentity:
    provider: str
    subject: str
    email: str | None
    name: str | None
    groups: list[str]
    roles: list[str]
    brands: list[str]
    jurisdictions: list[str]
    claims: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# ID token validation (no IO)


def _bad(what: str) -> Unauthorized:
    return Unauthorized(what, field="id_token")


class _NoMatchingKey(Unauthorized):
    """No key of the JWKS verifies the token: the provider may have rotated its keys since."""


def _key_fits(key: dict[str, Any], alg: str) -> bool:
    kty, curves = _KEY_TYPES[alg]
    if key.get("kty") != kty:
        return False
    if curves is not None and key.get("crv") not in curves:
        return False
    if key.get("use") not in (None, "sig"):
        return False
    ops = key.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return False
    # A key that names its algorithm may only be used with that one.
    return key.get("alg") in (None, alg)


def _timestamp(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"ID token {name} is not a number")
    return int(value)


def validate_id_token(
    token: str,
    *,
    jwks: dict[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: list[str],
    leeway: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ID token's claims if it is genuine and meant for us; Unauthorized naming what failed.

    Checks, in order: the signature (key by `kid`, algorithm both allowed by the configuration and
    fitting the key; never `none` or HS*), issuer, audience, `azp`, expiry, issue time, nonce, subject.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _bad("ID token signature: the token is malformed") from None
    alg = header.get("alg")
    allowed = [a for a in algorithms if a in SUPPORTED_ALGORITHMS]
    if not isinstance(alg, str) or alg not in allowed:
        raise _bad(f"ID token signature: algorithm {alg!r} is not allowed (allowed: {', '.join(allowed)})")
    kid = header.get("kid")
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    candidates = [k for k in keys if _key_fits(k, alg)]
    if not candidates:
        raise _NoMatchingKey(
            f"ID token signature: no {alg} key with kid {kid!r} in the provider's JWKS", field="id_token"
        )
    claims: dict[str, Any] | None = None
    for key in candidates:
        try:
            public = jwt.PyJWK(key, algorithm=alg)
            # Signature only here: the claims are checked below against `now`, with clearer errors.
            claims = jwt.decode(
                token,
                key=public.key,
                algorithms=[alg],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
            break
        except (jwt.PyJWKError, jwt.PyJWTError):
            continue
    if claims is None:
        raise _NoMatchingKey("ID token signature is invalid", field="id_token")

    if claims.get("iss") != issuer:
        raise _bad(f"ID token issuer {claims.get('iss')!r} is not {issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise _bad("ID token audience does not include this client")
    azp = claims.get("azp")
    if (azp is not None or len(audiences) > 1) and azp != client_id:
        raise _bad("ID token azp (authorized party) is not this client")
    at = int((now or datetime.now(UTC)).timestamp())
    exp = _timestamp(claims, "exp")
    if exp is None:
        raise _bad("ID token has no exp")
    if at > exp + leeway:
        raise _bad("ID token expired")
    iat = _timestamp(claims, "iat")
    if iat is None:
        raise _bad("ID token has no iat")
    if iat > at + leeway:
        raise _bad("ID token iat is in the future")
    nbf = _timestamp(claims, "nbf")
    if nbf is not None and nbf > at + leeway:
        raise _bad("ID token is not valid yet (nbf)")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise _bad("ID token nonce does not match this sign-in")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _bad("ID token has no subject (sub)")
    return claims


# ---------------------------------------------------------------------------------------------
# Mapping groups to roles and scopes


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The claim named `path`, or the nested one if `path` is dotted and no such flat claim exists."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def groups_of(claims: dict[str, Any], path: str) -> list[str]:
    value = claim_at(claims, path)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)]
    return []


def _union(groups: list[str], mapping: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for group in groups:
        for item in mapping.get(group, []):
            if item not in out:
                out.append(item)
    return out


def map_identity(config: OidcProviderConfig, claims: dict[str, Any]) -> SsoIdentity:
    """Roles, brands and jurisdictions of the operator from their groups; Forbidden without a role."""
    groups = groups_of(claims, config.groups_claim)
    roles = _union(groups, config.group_roles)
    if not roles:
        raise Forbidden("no Pitboss role for your groups")
    email = claims.get("email")
    name = claims.get("name")
    return SsoIdentity(
        provider=config.name,
        subject=str(claims["sub"]),
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
        groups=groups,
        roles=roles,
        brands=_union(groups, config.group_brands) or list(config.default_brands),
        jurisdictions=_union(groups, config.group_jurisdictions) or list(config.default_jurisdictions),
        claims=claims,
    )


def safe_return_to(value: str | None) -> str | None:
    """A path on this site, or None: anything else would make the callback an open redirect."""
    if not value or len(value) > _MAX_RETURN_TO or not value.startswith("/"):
        return None
    if value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\t\\"):
        return None
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636."""
    verifier = _b64url(secrets.token_bytes(48))
    return verifier, _b64url(hashlib.sha256(verifier.encode()).digest())


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass
class _Provider:
    config: OidcProviderConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    metadata: dict[str, Any] | None = None
    metadata_at: float = 0.0
    jwks: dict[str, Any] | None = None
    jwks_at: float = 0.0


class OidcRegistry:
    """All configured providers; one per Serve replica. Discovery and JWKS are cached per provider."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, http: httpx.AsyncClient | None = None) -> None:
        self._providers = {p.name: _Provider(p) for p in parse_providers(settings.oidc_providers)}
        self._redis = redis
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)

    def providers(self) -> list[OidcProviderConfig]:
        return [p.config for p in self._providers.values()]

    def _provider(self, name: str) -> _Provider:
        provider = self._providers.get(name)
        if provider is None:
            raise NotFound(f"unknown SSO provider {name!r}")
        return provider

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the flow ---

    async def start(self, provider: str, redirect_uri: str, return_to: str | None = None) -> SsoStart:
        """The provider's authorization URL to send the browser to, and the state it carries back."""
        p = self._provider(provider)
        metadata = await self._metadata(p)
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        record = {
            "provider": p.config.name,
            "nonce": nonce,
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "return_to": safe_return_to(return_to),
        }
        try:
            await self._redis.set(STATE_KEY + state, json.dumps(record), ex=STATE_TTL_SECONDS, nx=True)
        except aioredis.RedisError as exc:
            raise Unavailable(f"cannot store the SSO state: {exc}") from exc
        params = {
            "response_type": "code",
            "client_id": p.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(p.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        endpoint = urlsplit(str(metadata["authorization_endpoint"]))
        query = f"{endpoint.query}&{urlencode(params)}" if endpoint.query else urlencode(params)
        return SsoStart(url=urlunsplit(endpoint._replace(query=query, fragment="")), state=state)

    async def finish(self, provider: str, code: str, state: str, redirect_uri: str) -> tuple[SsoIdentity, str | None]:
        """Exchange the code, validate the ID token, map the groups; (identity, return_to)."""
        p = self._provider(provider)
        record = await self._take_state(state)
        if record.get("provider") != p.config.name:
            raise Unauthorized("the SSO state belongs to another provider", field="state")
        if record.get("redirect_uri") != redirect_uri:
            raise Unauthorized("the SSO state was issued for another redirect URI", field="state")
        if not code:
            raise Unauthorized("the provider sent no authorization code", field="code")
        metadata = await self._metadata(p)
        tokens = await self._exchange(p, metadata, code, str(record["verifier"]), redirect_uri)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthorized(f"{p.config.display_name} returned no ID token", field="id_token")
        claims = await self._validate(p, metadata, id_token, str(record["nonce"]))
        access_token = tokens.get("access_token")
        if claim_at(claims, p.config.groups_claim) is None and isinstance(access_token, str):
            # Some providers leave groups out of the ID token (size limits) but serve them at userinfo.
            claims = {**await self._userinfo(p, metadata, access_token, str(claims["sub"])), **claims}
        return map_identity(p.config, claims), record.get("return_to")

    async def cancel(self, provider: str, state: str) -> str | None:
        """The callback came back with `error=` (the operator declined, or the provider refused):
        consume the state so it cannot be used later; its return_to, if it was this provider's."""
        self._provider(provider)
        try:
            record = await self._take_state(state)
        except Unauthorized:
            return None
        return_to = record.get("return_to") if record.get("provider") == provider else None
        return return_to if isinstance(return_to, str) else None

    # --- steps ---

    async def _take_state(self, state: str) -> dict[str, Any]:
        if not _STATE_SHAPE.fullmatch(state or ""):
            raise Unauthorized("unknown SSO state", field="state")
        try:
            raw = await self._redis.getdel(STATE_KEY + state)
        except aioredis.RedisError as exc:
            raise Unavailable(f"cannot read the SSO state: {exc}") from exc
        if raw is None:
            raise Unauthorized("unknown, expired or already used SSO state; start the sign-in again", field="state")
        record: dict[str, Any] = json.loads(raw)
        return record

    async def _get_json(self, p: _Provider, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise Unavailable(f"{p.config.display_name}: cannot fetch its {what}: {exc!r}") from exc
        if response.status_code != 200:
            raise Unavailable(f"{p.config.display_name}: its {what} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise Unavailable(f"{p.config.display_name}: its {what} is not JSON") from None
        if not isinstance(body, dict):
            raise Unavailable(f"{p.config.display_name}: its {what} is not a JSON object")
        return body

    async def _metadata(self, p: _Provider) -> dict[str, Any]:
        if p.metadata is not None and time.monotonic() - p.metadata_at < DISCOVERY_TTL_SECONDS:
            return p.metadata
        async with p.lock:
            if p.metadata is not None and time.monotonic() - p.metadata_at < DISCOVERY_TTL_SECONDS:
                return p.metadata
            metadata = await self._get_json(p, p.config.discovery_url(), "discovery document")
            if metadata.get("issuer") != p.config.issuer:
                raise Unavailable(
                    f"{p.config.display_name}: discovery names issuer {metadata.get('issuer')!r}, "
                    f"configured is {p.config.issuer!r}"
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(metadata.get(key), str):
                    raise Unavailable(f"{p.config.display_name}: discovery has no {key}")
            p.metadata, p.metadata_at = metadata, time.monotonic()
            # A new discovery document may name a new JWKS.
            p.jwks = None
            return metadata

    async def _jwks(self, p: _Provider, metadata: dict[str, Any], refresh: bool = False) -> dict[str, Any]:
        async with p.lock:
            fresh = p.jwks is not None and time.monotonic() - p.jwks_at < DISCOVERY_TTL_SECONDS
            may_refetch = time.monotonic() - p.jwks_at >= JWKS_REFETCH_SECONDS
            if p.jwks is None or not fresh or (refresh and may_refetch):
                jwks = await self._get_json(p, str(metadata["jwks_uri"]), "JWKS")
                if not isinstance(jwks.get("keys"), list):
                    raise Unavailable(f"{p.config.display_name}: its JWKS has no keys")
                p.jwks, p.jwks_at = jwks, time.monotonic()
            assert p.jwks is not None
            return p.jwks

    async def _validate(self, p: _Provider, metadata: dict[str, Any], id_token: str, nonce: str) -> dict[str, Any]:
        def check(jwks: dict[str, Any]) -> dict[str, Any]:
            return validate_id_token(
                id_token,
                jwks=jwks,
                issuer=str(metadata["issuer"]),
                client_id=p.config.client_id,
                nonce=nonce,
                algorithms=p.config.allowed_algorithms,
                leeway=p.config.leeway_seconds,
            )

        cached = await self._jwks(p, metadata)
        try:
            return check(cached)
        except _NoMatchingKey:
            # The provider may have rotated its keys since we cached them: refetch once (rate-limited).
            fresh = await self._jwks(p, metadata, refresh=True)
            if fresh is cached:
                raise
            return check(fresh)

    async def _exchange(
        self, p: _Provider, metadata: dict[str, Any], code: str, verifier: str, redirect_uri: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        secret = p.config.client_secret
        if secret is None:
            form["client_id"] = p.config.client_id
        else:
            # Discovery's default when the provider does not say (OpenID Connect Discovery 1.0, 3).
            methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            if "client_secret_basic" in methods:
                # RFC 6749 2.3.1: both parts are form-encoded before the Basic encoding.
                pair = f"{quote(p.config.client_id, safe='')}:{quote(secret.get_secret_value(), safe='')}"
                headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            elif "client_secret_post" in methods:
                form["client_id"] = p.config.client_id
                form["client_secret"] = secret.get_secret_value()
            else:
                raise Unavailable(
                    f"{p.config.display_name}: its token endpoint supports neither client_secret_basic "
                    f"nor client_secret_post ({', '.join(map(str, methods))})"
                )
        try:
            response = await self._http.post(str(metadata["token_endpoint"]), data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{p.config.display_name}: cannot reach its token endpoint: {exc!r}") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return body
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        detail = f"{error}: {description}" if description else str(error or f"HTTP {response.status_code}")
        if error == "invalid_client" or response.status_code == 401:
            raise Unavailable(f"{p.config.display_name} refused Pitboss's client credentials ({detail})")
        if response.status_code >= 500 or error is None:
            raise Unavailable(f"{p.config.display_name}: its token endpoint failed ({detail})")
        raise Unauthorized(f"{p.config.display_name} refused the sign-in code ({detail})", field="code")

    async def _userinfo(self, p: _Provider, metadata: dict[str, Any], access_token: str, sub: str) -> dict[str, Any]:
        url = metadata.get("userinfo_endpoint")
        if not isinstance(url, str):
            return {}
        try:
            response = await self._http.get(
                url, headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"{p.config.display_name}: cannot reach its userinfo endpoint: {exc!r}") from exc
        if response.status_code != 200:
            raise Unavailable(f"{p.config.display_name}: its userinfo endpoint answered HTTP {response.status_code}")
        try:
            info: Any = response.json()
        except ValueError:
            return {}
        # OpenID Connect Core 5.3.2: userinfo about someone else must not be used.
        if not isinstance(info, dict) or info.get("sub") != sub:
            raise Unauthorized(f"{p.config.display_name}: userinfo is about another subject", field="id_token")
        return info
