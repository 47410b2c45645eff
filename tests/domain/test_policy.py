"""The policy engine: deny by default, each condition, scope, amounts, PII masking, and the
properties that must hold for any subject and resource."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.policy_file import load_policy
from domain.policy import ALL, CHECKS, PolicyEngine, Resource, Subject, mask_value
from schemas.policy import CONDITIONS, Policy

ENGINE = PolicyEngine(load_policy())  # the packaged default
ROLES = sorted(ENGINE.roles)
PERMISSIONS = sorted(ENGINE.policy.permissions)


def small(**extra: Any) -> PolicyEngine:
    """A policy with one permission per condition, so each is tested alone."""
    doc: dict[str, Any] = {
        "pii_read_permission": "p.pii",
        "pii_fields": {"email": "email", "phone": "phone", "birth_date": "date", "first_name": "initial"},
        "permissions": {
            "p.pii": {"description": "clear PII"},
            "p.read": {"description": "read", "shows_pii": True},
            "p.any": {"description": "unconditional"},
            "p.vip": {"description": "assigned VIP only"},
            "p.approve": {"description": "four eyes"},
            "p.own": {"description": "own only"},
            "p.pay": {"description": "pay", "second_approver_above_minor": 1000, "approve_permission": "p.approve"},
            "p.capped": {"description": "capped grant"},
            "p.orphan": {"description": "no role grants it"},
        },
        "roles": {
            "r": {
                "description": "the role",
                "grants": [
                    {"permissions": ["p.read", "p.any", "p.pay"]},
                    {"permissions": ["p.vip", "p.pii"], "conditions": ["assigned_vip"]},
                    {"permissions": ["p.approve"], "conditions": ["not_self"]},
                    {"permissions": ["p.own"], "conditions": ["self_only"]},
                    {"permissions": ["p.capped"], "max_amount_minor": 500},
                ],
            },
            "big": {"description": "uncapped", "grants": [{"permissions": ["p.capped"]}]},
        },
    }
    doc.update(extra)
    return PolicyEngine(Policy.model_validate(doc))


def subj(*roles: str, op: str = "op1", brands: tuple[str, ...] = (ALL,), juris: tuple[str, ...] = (ALL,)) -> Subject:
    return Subject(op, frozenset(roles), frozenset(brands), frozenset(juris))


def player(**kw: Any) -> Resource:
    return Resource("player", id="p1", **kw)


# ---------------------------------------------------------------------------- deny by default


def test_unknown_permission_is_denied_and_says_unknown() -> None:
    d = ENGINE.decide(subj("admin"), "player.delete")
    assert not d.allowed and "unknown permission 'player.delete'" in d.reason


def test_role_without_grant_is_denied_naming_role_and_permission() -> None:
    d = ENGINE.decide(subj("marketer"), "player.pii.read", player(brand="b1"))
    assert not d.allowed and d.reason == "role marketer has no grant for player.pii.read"


def test_permission_granted_to_no_role_is_denied() -> None:
    assert not small().allowed(subj("r", "big"), "p.orphan")


def test_subject_without_roles_is_denied_everything() -> None:
    assert not any(ENGINE.allowed(subj(), p) for p in PERMISSIONS)


def test_unknown_roles_are_ignored() -> None:
    assert not ENGINE.allowed(subj("root", "superuser"), "dashboard.view")
    d = ENGINE.decide(subj("root", "support_agent"), "player.read", player(brand="b1"))
    assert d.allowed and d.reason == "granted to role support_agent"


def test_known_permission() -> None:
    assert ENGINE.known_permission("payment.adjust") and not ENGINE.known_permission("payment.steal")


# ---------------------------------------------------------------------------- scope (always enforced)


def test_brand_scope_allows_own_brand_and_all_and_brandless() -> None:
    e = small()
    assert e.allowed(subj("r", brands=("b1",)), "p.any", player(brand="b1"))
    assert e.allowed(subj("r", brands=(ALL,)), "p.any", player(brand="b9"))
    assert e.allowed(subj("r", brands=()), "p.any", player())


def test_brand_scope_is_enforced_although_the_grant_does_not_name_it() -> None:
    d = small().decide(subj("r", brands=("b1",)), "p.any", player(brand="b2"))
    assert not d.allowed and d.reason == "player brand 'b2' outside operator's brands"


def test_jurisdiction_scope_is_enforced_although_the_grant_does_not_name_it() -> None:
    e = small()
    d = e.decide(subj("r", juris=("MT",)), "p.any", player(jurisdiction="GB"))
    assert not d.allowed and d.reason == "player jurisdiction 'GB' outside operator's jurisdictions"
    assert e.allowed(subj("r", juris=("MT", "GB")), "p.any", player(jurisdiction="GB"))
    assert e.allowed(subj("r", juris=(ALL,)), "p.any", player(jurisdiction="SE"))
    assert e.allowed(subj("r", juris=()), "p.any", player())


def test_subject_of_upper_cases_country_codes_but_keeps_all() -> None:
    s = Subject.of("op", ["support_agent"], ["b1"], ["mt", ALL])
    assert s.jurisdictions == frozenset({"MT", ALL}) and s.roles == frozenset({"support_agent"})


# ---------------------------------------------------------------------------- conditions


def test_the_engine_implements_exactly_the_conditions_a_file_may_name() -> None:
    assert set(CHECKS) == set(CONDITIONS)


def test_assigned_vip_allows_only_the_players_vip_manager() -> None:
    e = small()
    assert e.allowed(subj("r", op="vip1"), "p.vip", player(vip_manager="vip1"))
    d = e.decide(subj("r", op="vip1"), "p.vip", player(vip_manager="vip2"))
    assert not d.allowed and "assigned VIP manager" in d.reason
    assert not e.allowed(subj("r", op="vip1"), "p.vip", player())
    assert not e.allowed(subj("r", op="vip1"), "p.vip")


def test_not_self_refuses_ones_own_resource() -> None:
    e = small()
    d = e.decide(subj("r", op="sup"), "p.approve", Resource("payment", owner="sup", amount_minor=5000))
    assert not d.allowed and "operator's own" in d.reason
    assert e.allowed(subj("r", op="sup"), "p.approve", Resource("payment", owner="agent", amount_minor=5000))
    assert e.allowed(subj("r", op="sup"), "p.approve", Resource("payment"))
    assert e.allowed(subj("r", op="sup"), "p.approve")


def test_self_only_allows_only_ones_own_resource() -> None:
    e = small()
    assert e.allowed(subj("r", op="a"), "p.own", Resource("session", id="s1", owner="a"))
    d = e.decide(subj("r", op="a"), "p.own", Resource("session", id="s2", owner="b"))
    assert not d.allowed and "not the operator's own" in d.reason
    assert not e.allowed(subj("r", op="a"), "p.own", Resource("session"))
    assert not e.allowed(subj("r", op="a"), "p.own")


# ---------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("amount", "second"), [(0, False), (1000, False), (1001, True), (-1001, True), (-1000, False), (None, True)]
)
def test_second_approver_above_threshold_by_absolute_amount(amount: int | None, second: bool) -> None:
    d = small().decide(subj("r"), "p.pay", Resource("payment", owner="op1", amount_minor=amount))
    assert d.allowed and d.needs_second_approver is second
    if second:
        assert "p.approve" in d.reason


def test_no_resource_means_amounts_are_not_considered() -> None:
    d = small().decide(subj("r"), "p.pay")
    assert d.allowed and not d.needs_second_approver
    assert small().allowed(subj("r"), "p.capped")


def test_max_amount_grant_does_not_apply_above_its_cap() -> None:
    e = small()
    assert e.allowed(subj("r"), "p.capped", Resource("payment", amount_minor=500))
    d = e.decide(subj("r"), "p.capped", Resource("payment", amount_minor=501))
    assert not d.allowed and "above the grant's limit of 500" in d.reason
    assert not e.allowed(subj("r"), "p.capped", Resource("payment"))  # unknown amount: over every cap
    assert e.allowed(subj("r", "big"), "p.capped", Resource("payment", amount_minor=10**9))


def test_default_adjustment_above_1000_needs_a_supervisor_who_is_not_the_requester() -> None:
    agent, boss = subj("payments_operator", op="agent"), subj("supervisor", op="boss")
    adj = Resource("payment", id="adj1", brand="b1", jurisdiction="MT", owner="agent", amount_minor=100_001)
    assert ENGINE.decide(agent, "payment.adjust", adj).needs_second_approver
    assert not ENGINE.decide(
        agent, "payment.adjust", Resource("payment", owner="agent", amount_minor=100_000)
    ).needs_second_approver
    assert ENGINE.approve_permission("payment.adjust") == "payment.adjust.approve"
    assert ENGINE.allowed(boss, "payment.adjust.approve", adj)
    assert not ENGINE.allowed(agent, "payment.adjust.approve", adj)
    own = Resource("payment", brand="b1", owner="boss", amount_minor=100_001)
    assert not ENGINE.allowed(subj("supervisor", "payments_operator", op="boss"), "payment.adjust.approve", own)


def test_decide_role_is_the_gate_before_the_resource_is_known() -> None:
    vip = subj("vip_manager", op="vip1")
    gate = ENGINE.decide_role(vip, "player.read")
    assert gate.allowed and "vip_manager" in gate.reason
    assert not ENGINE.allowed(vip, "player.read")  # no resource: assigned_vip cannot hold
    assert not ENGINE.decide_role(subj("marketer"), "player.pii.read").allowed
    assert "unknown permission" in ENGINE.decide_role(vip, "player.delete").reason
    assert ENGINE.decide_role(subj("supervisor"), "player.vip.assign").allowed


# ---------------------------------------------------------------------------- PII


def test_read_without_pii_permission_lists_the_fields_to_mask() -> None:
    d = ENGINE.decide(subj("marketer"), "player.read", player(brand="b1"))
    assert d.allowed and d.masked_fields == ENGINE.pii_fields
    assert {"email", "phone", "birth_date", "first_name", "last_name", "address"} <= ENGINE.pii_fields


def test_read_with_pii_permission_masks_nothing() -> None:
    assert ENGINE.decide(subj("support_agent"), "player.read", player(brand="b1")).masked_fields == frozenset()


def test_admin_manages_the_system_not_players_so_sees_players_masked() -> None:
    d = ENGINE.decide(subj("admin"), "player.read", player(brand="b1"))
    assert d.allowed and d.masked_fields == ENGINE.pii_fields


def test_vip_manager_sees_own_players_in_clear_and_no_other_player() -> None:
    vip = subj("vip_manager", op="vip1")
    d = ENGINE.decide(vip, "player.read", player(vip_manager="vip1", brand="b1"))
    assert d.allowed and d.masked_fields == frozenset()
    assert not ENGINE.allowed(vip, "player.read", player(vip_manager="vip2", brand="b1"))


def test_masked_pii_is_only_on_decisions_for_permissions_that_show_pii() -> None:
    assert ENGINE.decide(subj("marketer"), "campaign.read").masked_fields == frozenset()
    assert ENGINE.decide(subj("marketer"), "player.pii.read").masked_fields == frozenset()


def test_mask_shapes() -> None:
    assert mask_value("email", "john@example.com") == "j***@example.com"
    assert mask_value("email", "j@example.com") == "***@example.com"
    assert mask_value("phone", "+447700900189") == "+44********89"
    assert mask_value("phone", "12345") == "****"
    assert mask_value("date", "1990-04-01") == "****-**-**"
    assert mask_value("initial", "Maria") == "M***"
    assert mask_value("full", "1 Main Street") == "****"
    assert mask_value("full", None) is None


def test_mask_replaces_nested_pii_for_a_subject_without_pii_and_copies() -> None:
    data = {
        "player_id": "p1",
        "email": "ann@example.com",
        "profile": {"first_name": "Ann", "birth_date": "1990-01-01"},
        "contacts": [{"phone": "+35699123456"}],
        "address": {"line1": "1 Main St", "city": "Valletta"},
    }
    out = ENGINE.mask(subj("marketer"), data, player(brand="b1"))
    assert out == {
        "player_id": "p1",
        "email": "a***@example.com",
        "profile": {"first_name": "A***", "birth_date": "****-**-**"},
        "contacts": [{"phone": "+35*******56"}],
        "address": {"line1": "****", "city": "****"},
    }
    assert data["email"] == "ann@example.com"  # the input is left alone


def test_mask_keeps_data_for_a_subject_with_pii_on_that_resource() -> None:
    data = {"email": "ann@example.com", "nested": {"phone": "+35699123456"}}
    out = ENGINE.mask(subj("support_agent"), data, player(brand="b1"))
    assert out == data and out is not data and out["nested"] is not data["nested"]
    # out of the agent's brand: no PII permission there, so masked
    assert ENGINE.mask(subj("support_agent", brands=("b1",)), data, player(brand="b2"))["email"] != data["email"]


# ---------------------------------------------------------------------------- views


def test_permissions_for_is_the_unconditional_union_of_known_roles() -> None:
    perms = ENGINE.permissions_for(["vip_manager", "nobody"])
    assert {"player.read", "player.pii.read", "dashboard.view", "session.end_own"} <= perms
    assert "payment.adjust" not in perms
    assert ENGINE.permissions_for(["nobody"]) == frozenset()
    assert ENGINE.permissions_for(["marketer", "analyst"]) == (
        ENGINE.permissions_for(["marketer"]) | ENGINE.permissions_for(["analyst"])
    )


def test_roles_view_has_descriptions_and_every_role_grants() -> None:
    for name, info in ENGINE.roles.items():
        assert info.name == name and info.description
        assert any(g.every_role and "dashboard.view" in g.permissions for g in info.grants)


# ---------------------------------------------------------------------------- the default policy


@pytest.mark.parametrize(
    ("role", "permission", "expected"),
    [
        ("support_agent", "player.pii.read", True),
        ("support_agent", "payment.adjust", False),
        ("support_agent", "player.block", False),
        ("support_agent", "ticket.write", True),
        ("payments_operator", "payment.adjust", True),
        ("payments_operator", "payment.adjust.approve", False),
        ("compliance_officer", "player.block", True),
        ("compliance_officer", "audit.export", True),
        ("compliance_officer", "payment.adjust", False),
        ("marketer", "segment.export", True),
        ("marketer", "player.pii.read", False),
        ("marketer", "audit.read", False),
        ("analyst", "report.read", True),
        ("analyst", "segment.write", False),
        ("analyst", "player.pii.read", False),
        ("supervisor", "payment.adjust.approve", True),
        ("supervisor", "session.end_any", True),
        ("supervisor", "operator.create", False),
        ("supervisor", "payment.adjust", False),
        ("admin", "operator.create", True),
        ("admin", "apikey.rotate", True),
        ("admin", "player.pii.read", False),
        ("admin", "payment.adjust", False),
        ("admin", "audit.verify", True),
    ],
)
def test_default_role_grants(role: str, permission: str, expected: bool) -> None:
    res = Resource(
        "player" if permission.startswith("player") else "thing",
        brand="b1",
        jurisdiction="MT",
        owner="someone-else",
        amount_minor=100,
    )
    assert ENGINE.allowed(subj(role), permission, res) is expected


def test_admin_cannot_change_disable_or_reset_their_own_account() -> None:
    me = Resource("operator", id="adm1", owner="adm1")
    other = Resource("operator", id="adm2", owner="adm2")
    for perm in ("operator.update", "operator.disable", "operator.reset"):
        assert not ENGINE.allowed(subj("admin", op="adm1"), perm, me)
        assert ENGINE.allowed(subj("admin", op="adm1"), perm, other)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_manages_only_its_own_sessions_and_second_factor(role: str) -> None:
    s = subj(role, op="me")
    assert ENGINE.allowed(s, "dashboard.view")
    for perm in ("session.read_own", "session.end_own", "mfa.manage_own"):
        assert ENGINE.allowed(s, perm, Resource("session", owner="me"))
        assert not ENGINE.allowed(s, perm, Resource("session", owner="you"))


# ---------------------------------------------------------------------------- properties

names = st.text(min_size=1, max_size=8)
brands = st.sampled_from(["b1", "b2", "b3", "b4"])
countries = st.sampled_from(["MT", "GB", "SE", "DE", None])
operators = st.sampled_from(["op1", "op2", "op3"])
role_sets = st.frozensets(st.sampled_from([*ROLES, "ghost"]), max_size=4)
resources = st.builds(
    Resource,
    kind=st.sampled_from(["player", "payment", "session", "operator"]),
    id=st.none() | names,
    brand=st.none() | brands,
    jurisdiction=countries,
    vip_manager=st.none() | operators,
    owner=st.none() | operators,
    amount_minor=st.none() | st.integers(-(10**9), 10**9),
)


@given(
    roles=role_sets,
    scope=st.frozensets(brands, max_size=3),
    res=resources,
    permission=st.sampled_from(PERMISSIONS),
    op=operators,
)
def test_a_resource_outside_the_subjects_brands_is_never_reachable(
    roles: frozenset[str], scope: frozenset[str], res: Resource, permission: str, op: str
) -> None:
    brand = next(b for b in ("b1", "b2", "b3", "b4") if b not in scope)
    res = Resource(res.kind, res.id, brand, res.jurisdiction, res.vip_manager, res.owner, res.amount_minor)
    assert not ENGINE.allowed(Subject(op, roles, scope, frozenset({ALL})), permission, res)


@given(
    roles=role_sets,
    extra=st.sampled_from(ROLES),
    res=st.none() | resources,
    permission=st.sampled_from(PERMISSIONS),
    op=operators,
    scope=st.frozensets(brands | st.just(ALL), max_size=3),
)
def test_adding_a_role_never_removes_a_permission(
    roles: frozenset[str], extra: str, res: Resource | None, permission: str, op: str, scope: frozenset[str]
) -> None:
    before = ENGINE.decide(Subject(op, roles, scope, frozenset({ALL})), permission, res)
    after = ENGINE.decide(Subject(op, roles | {extra}, scope, frozenset({ALL})), permission, res)
    if before.allowed:
        assert after.allowed and after.masked_fields <= before.masked_fields
    assert ENGINE.permissions_for(roles) <= ENGINE.permissions_for(roles | {extra})


# A date is masked as the constant "****-**-**": a value that is part of that constant ("-", "*-")
# is in every masked date without anything being revealed.
pii_values = st.text(min_size=1, max_size=40).filter(lambda v: set(v) != {"*"} and v not in "****-**-**")
json_leaf = st.none() | st.integers() | st.text(max_size=10)


@given(
    values=st.dictionaries(st.sampled_from(sorted(ENGINE.pii_fields)), pii_values, min_size=1),
    noise=st.dictionaries(st.text(max_size=5), json_leaf, max_size=3),
    roles=st.frozensets(st.sampled_from(["marketer", "analyst", "admin", "ghost"]), max_size=3),
)
def test_masked_output_never_contains_an_original_pii_value(
    values: dict[str, str], noise: dict[str, Any], roles: frozenset[str]
) -> None:
    s = Subject("op1", roles, frozenset({ALL}), frozenset({ALL}))
    assert not ENGINE.allowed(s, "player.pii.read", player(brand="b1"))
    data = {**noise, **values, "nested": {**values}, "items": [dict(values)]}
    out = ENGINE.mask(s, data, player(brand="b1"))
    for key, original in values.items():
        for masked in (out[key], out["nested"][key], out["items"][0][key]):
            assert original not in str(masked)


text = st.text(max_size=12)


@given(
    op=text,
    roles=st.frozensets(st.sampled_from(ROLES) | text, max_size=4),
    scope=st.frozensets(text, max_size=3),
    juris=st.frozensets(text, max_size=3),
    permission=st.sampled_from(PERMISSIONS) | text,
    res=st.none()
    | st.builds(
        Resource,
        kind=text,
        id=st.none() | text,
        brand=st.none() | text,
        jurisdiction=st.none() | text,
        vip_manager=st.none() | text,
        owner=st.none() | text,
        amount_minor=st.none() | st.integers(),
    ),
)
def test_decide_never_raises_for_arbitrary_strings(
    op: str, roles: frozenset[str], scope: frozenset[str], juris: frozenset[str], permission: str, res: Resource | None
) -> None:
    d = ENGINE.decide(Subject(op, roles, scope, juris), permission, res)
    assert d.permission == permission and d.reason
    if not ENGINE.known_permission(permission):
        assert not d.allowed
    if d.allowed:  # the route gate never refuses what the full decision allows
        assert ENGINE.decide_role(Subject(op, roles, scope, juris), permission).allowed
