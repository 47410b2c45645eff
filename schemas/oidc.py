"""Configuration of the OpenID Connect providers operators may sign in through (`PITBOSS_OIDC_PROVIDERS`).

The setting is a JSON list of `OidcProviderConfig` objects. Group names are the provider's; roles,
brands and jurisdictions are Pitboss's. Nothing here does IO: `adapters.oidc` runs the flow.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

# Asymmetric algorithms only. `none` needs no key and HS* would make the client secret (or, with
# a confused verifier, the provider's public key) a signing key: both are refused outright.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Plain http is tolerated for a provider on the machine itself (the local test IdP) only.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
NonEmpty = Annotated[str, Field(min_length=1, max_length=200)]


class OidcConfigError(ValueError):
    """`PITBOSS_OIDC_PROVIDERS` cannot be used; the message names the provider and the field."""


class OidcProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # In the dashboard's URLs (`/dashboard/sso/{name}/start`), so a slug.
    name: Slug
    display_name: NonEmpty
    # Exactly as the provider writes it in its discovery document and in the `iss` claim.
    issuer: str
    client_id: NonEmpty
    # None: a public client, protected by PKCE alone.
    client_secret: SecretStr | None = None
    scopes: list[NonEmpty] = Field(default_factory=lambda: ["openid", "email", "profile"])
    # A claim name, or a dotted path into nested claims (`realm_access.roles`).
    groups_claim: NonEmpty = "groups"
    group_roles: dict[NonEmpty, list[NonEmpty]]
    group_brands: dict[NonEmpty, list[NonEmpty]] = Field(default_factory=dict)
    group_jurisdictions: dict[NonEmpty, list[NonEmpty]] = Field(default_factory=dict)
    # Used when none of the operator's groups grants a brand (or jurisdiction); "*" means all.
    default_brands: list[NonEmpty] = Field(default_factory=list)
    default_jurisdictions: list[NonEmpty] = Field(default_factory=list)
    allowed_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"], min_length=1)
    leeway_seconds: int = Field(default=60, ge=0, le=300)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https URL")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError("must use https (plain http only for a provider on loopback)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError('must include "openid"')
        if any(" " in s for s in value):
            raise ValueError("one scope per list item, without spaces")
        return value

    @field_validator("allowed_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"{alg!r} is never accepted (unsigned or symmetric)")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"{alg!r} is not one of {sorted(SUPPORTED_ALGORITHMS)}")
        return value

    @field_validator("group_roles")
    @classmethod
    def _some_role(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not any(value.values()):
            raise ValueError("must map at least one group to a role, or nobody could sign in")
        return value

    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(the object)"


def parse_providers(json_text: str) -> list[OidcProviderConfig]:
    """Parse `PITBOSS_OIDC_PROVIDERS`; an empty value means no provider.

    Raises OidcConfigError naming the provider (by position and name) and the field at fault.
    """
    if not json_text.strip():
        return []
    try:
        raw: Any = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise OidcConfigError(
            f"PITBOSS_OIDC_PROVIDERS is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(raw, list):
        raise OidcConfigError(f"PITBOSS_OIDC_PROVIDERS must be a JSON list of providers, not {type(raw).__name__}")
    providers: list[OidcProviderConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        label = f"provider #{index + 1}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']!r})"
        if not isinstance(item, dict):
            raise OidcConfigError(f"PITBOSS_OIDC_PROVIDERS {label} must be a JSON object")
        try:
            provider = OidcProviderConfig.model_validate(item)
        except ValidationError as exc:
            # Never echo input values: a wrong field may hold a client secret.
            problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False))
            raise OidcConfigError(f"PITBOSS_OIDC_PROVIDERS {label}: {problems}") from None
        if provider.name in seen:
            raise OidcConfigError(f"PITBOSS_OIDC_PROVIDERS {label}: name {provider.name!r} is used twice")
        seen.add(provider.name)
        providers.append(provider)
    return providers
