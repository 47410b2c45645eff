"""`PITBOSS_OIDC_PROVIDERS`: what parses, and errors that name the provider and the field at fault."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.oidc import OidcConfigError, OidcProviderConfig, parse_providers


def provider(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "corp",
        "display_name": "Corporate SSO",
        "issuer": "https://login.example.com/tenant",
        "client_id": "pitboss",
        "client_secret": "s3cr3t-value",
        "group_roles": {"pitboss-admins": ["admin"]},
    }
    base.update(overrides)
    return base


def parse_one(**overrides: Any) -> OidcProviderConfig:
    (config,) = parse_providers(json.dumps([provider(**overrides)]))
    return config


def error_of(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    with pytest.raises(OidcConfigError) as caught:
        parse_providers(text)
    return str(caught.value)


def test_minimal_provider_gets_the_documented_defaults() -> None:
    config = parse_one()
    assert config.scopes == ["openid", "email", "profile"]
    assert config.groups_claim == "groups"
    assert config.allowed_algorithms == ["RS256", "ES256", "PS256", "EdDSA"]
    assert config.leeway_seconds == 60
    assert config.default_brands == [] and config.default_jurisdictions == []
    assert config.client_secret is not None and config.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(config)
    assert config.discovery_url() == "https://login.example.com/tenant/.well-known/openid-configuration"


def test_empty_setting_means_no_provider() -> None:
    assert parse_providers("") == []
    assert parse_providers("  ") == []
    assert parse_providers("[]") == []


def test_public_client_has_no_secret() -> None:
    assert parse_one(client_secret=None).client_secret is None


def test_several_providers_keep_their_order() -> None:
    configs = parse_providers(json.dumps([provider(name="b"), provider(name="a")]))
    assert [c.name for c in configs] == ["b", "a"]


def test_invalid_json_is_reported_with_its_position() -> None:
    message = error_of('[{"name": "corp",}]')
    assert "not valid JSON" in message and "line 1" in message


def test_a_json_object_instead_of_a_list_is_refused() -> None:
    assert "must be a JSON list" in error_of(provider())


def test_a_provider_that_is_not_an_object_is_refused() -> None:
    assert "provider #2 must be a JSON object" in error_of([provider(), "corp"])


def test_missing_field_names_the_provider_and_the_field() -> None:
    item = provider()
    del item["client_id"]
    message = error_of([item])
    assert "provider #1 ('corp')" in message and "client_id" in message


def test_unknown_field_is_refused() -> None:
    message = error_of([provider(brands=["demo"])])
    assert "brands" in message and "Extra inputs" in message


def test_plain_http_issuer_is_refused_except_on_loopback() -> None:
    assert "issuer" in error_of([provider(issuer="http://login.example.com")])
    assert parse_one(issuer="http://127.0.0.1:9400").issuer == "http://127.0.0.1:9400"
    assert "issuer" in error_of([provider(issuer="login.example.com")])
    assert "issuer" in error_of([provider(issuer="https://login.example.com/?tenant=1")])


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "HS512"])
def test_unsigned_and_symmetric_algorithms_are_never_accepted(alg: str) -> None:
    message = error_of([provider(allowed_algorithms=["RS256", alg])])
    assert "allowed_algorithms" in message and "never accepted" in message


def test_unknown_algorithm_is_refused() -> None:
    assert "RS257" in error_of([provider(allowed_algorithms=["RS257"])])


def test_no_algorithm_at_all_is_refused() -> None:
    assert "allowed_algorithms" in error_of([provider(allowed_algorithms=[])])


def test_scopes_must_include_openid() -> None:
    assert "openid" in error_of([provider(scopes=["email", "profile"])])


def test_a_provider_that_maps_no_group_to_a_role_is_refused() -> None:
    assert "group_roles" in error_of([provider(group_roles={})])
    assert "group_roles" in error_of([provider(group_roles={"everyone": []})])


def test_name_must_be_a_url_slug() -> None:
    assert "name" in error_of([provider(name="Corp SSO")])
    assert "name" in error_of([provider(name="../x")])


def test_leeway_is_bounded() -> None:
    assert "leeway_seconds" in error_of([provider(leeway_seconds=3600)])
    assert "leeway_seconds" in error_of([provider(leeway_seconds=-1)])


def test_duplicate_names_are_refused() -> None:
    assert "used twice" in error_of([provider(), provider(display_name="Again")])


def test_errors_never_echo_the_client_secret() -> None:
    message = error_of([provider(issuer="ftp://x", client_id="", client_secret="s3cr3t-value", extra="s3cr3t-value")])
    assert "s3cr3t-value" not in message
    assert "issuer" in message and "client_id" in message
