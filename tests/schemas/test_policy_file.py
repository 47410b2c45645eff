"""The policy file: the packaged default loads and says what it must; a malformed file is
refused with the offending part named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

import adapters.policy_file as policy_file
from adapters.policy_file import PolicyFileError, load_policy, parse_policy
from adapters.settings import Settings
from domain.policy import PolicyEngine

PERMISSIONS = {
    "dashboard.view",
    "player.read",
    "player.pii.read",
    "player.block",
    "player.unblock",
    "player.limits.read",
    "operator.read",
    "operator.create",
    "operator.update",
    "operator.disable",
    "operator.reset",
    "role.read",
    "apikey.read",
    "apikey.create",
    "apikey.rotate",
    "apikey.revoke",
    "session.read_own",
    "session.end_own",
    "session.read_any",
    "session.end_any",
    "mfa.manage_own",
    "audit.read",
    "audit.verify",
    "audit.export",
    "payment.read",
    "payment.adjust",
    "payment.adjust.approve",
    "ticket.read",
    "ticket.write",
    "ticket.assign",
    "kb.read",
    "kb.write",
    "segment.read",
    "segment.write",
    "segment.export",
    "campaign.read",
    "campaign.write",
    "report.read",
    "player.vip.assign",  # added: the back office's VIP assignment route
}
ROLES = {
    "support_agent",
    "payments_operator",
    "compliance_officer",
    "marketer",
    "analyst",
    "vip_manager",
    "supervisor",
    "admin",
}
DEFAULT = Path(policy_file.__file__).resolve().parents[1] / "cluster" / "policy" / "default.yaml"


def default_doc() -> dict[str, Any]:
    doc = yaml.safe_load(DEFAULT.read_text())
    assert isinstance(doc, dict)
    return doc


def refused(doc: Any) -> str:
    with pytest.raises(PolicyFileError) as info:
        parse_policy(yaml.safe_dump(doc) if not isinstance(doc, str) else doc, "test.yaml")
    return str(info.value)


def test_default_policy_loads_with_the_fixed_permission_and_role_names() -> None:
    policy = load_policy()
    assert set(policy.permissions) == PERMISSIONS
    assert set(policy.roles) == ROLES
    assert policy.pii_read_permission == "player.pii.read"


def test_every_permission_named_in_the_default_file_has_a_description_and_every_role_exists() -> None:
    doc = default_doc()
    policy = load_policy()
    named = {p for spec in doc["roles"].values() for g in spec["grants"] for p in g["permissions"]}
    named |= {p for g in doc["every_role"]["grants"] for p in g["permissions"]}
    assert named <= set(policy.permissions)
    assert all(spec.description.strip() for spec in policy.permissions.values())
    assert all(spec.description.strip() for spec in policy.roles.values())
    assert named == PERMISSIONS  # nothing declared that no role can ever use
    assert set(PolicyEngine(policy).roles) == ROLES


def test_adjustment_threshold_of_the_default_is_1000_00() -> None:
    spec = load_policy().permissions["payment.adjust"]
    assert spec.second_approver_above_minor == 100_000 and spec.approve_permission == "payment.adjust.approve"


def test_load_policy_reads_a_given_path(tmp_path: Path) -> None:
    doc = default_doc()
    doc["roles"]["auditor"] = {"description": "external auditor", "grants": [{"permissions": ["audit.read"]}]}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert "auditor" in load_policy(str(path)).roles


def test_load_policy_uses_the_configured_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = default_doc()
    del doc["roles"]["marketer"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(policy_file, "get_settings", lambda: Settings(policy_file=str(path)))
    assert "marketer" not in load_policy().roles


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read the policy file"):
        load_policy(str(tmp_path / "nope.yaml"))


def test_unknown_permission_in_a_grant_is_refused_naming_its_place() -> None:
    doc = default_doc()
    doc["roles"]["marketer"]["grants"][0]["permissions"].insert(0, "player.pii.raed")
    msg = refused(doc)
    assert "roles.marketer.grants[0].permissions[0]: unknown permission 'player.pii.raed'" in msg


def test_unknown_condition_is_refused_naming_its_place() -> None:
    doc = default_doc()
    doc["every_role"]["grants"][1]["conditions"] = ["self"]
    msg = refused(doc)
    assert "every_role.grants[1].conditions[0]: unknown condition 'self'" in msg and "self_only" in msg


def test_contradictory_conditions_are_refused() -> None:
    doc = default_doc()
    doc["roles"]["admin"]["grants"][1]["conditions"] = ["not_self", "self_only"]
    assert "roles.admin.grants[1].conditions: self_only and not_self can never both hold" in refused(doc)


def test_unknown_keys_are_refused_naming_the_path() -> None:
    doc = default_doc()
    doc["roles"]["analyst"]["grants"][0]["condition"] = ["brand_scope"]  # singular: a typo
    assert "roles.analyst.grants[0].condition: Extra inputs are not permitted" in refused(doc)
    doc = default_doc()
    doc["superusers"] = ["root"]
    assert "superusers: Extra inputs are not permitted" in refused(doc)


def test_wrong_types_are_refused_naming_the_path() -> None:
    doc = default_doc()
    doc["permissions"]["payment.adjust"]["second_approver_above_minor"] = "100000"
    assert "permissions.payment.adjust.second_approver_above_minor" in refused(doc)
    doc = default_doc()
    doc["roles"]["admin"]["grants"][0]["max_amount_minor"] = 1.5
    assert "roles.admin.grants[0].max_amount_minor" in refused(doc)


def test_missing_description_is_refused() -> None:
    doc = default_doc()
    del doc["permissions"]["kb.read"]["description"]
    assert "permissions.kb.read.description: Field required" in refused(doc)


def test_unknown_mask_style_and_bad_pii_permission_are_refused() -> None:
    doc = default_doc()
    doc["pii_fields"]["email"] = "hash"
    assert "pii_fields.email" in refused(doc)
    doc = default_doc()
    doc["pii_read_permission"] = "player.pii.see"
    assert "pii_read_permission: unknown permission 'player.pii.see'" in refused(doc)


def test_threshold_without_approver_is_refused() -> None:
    doc = default_doc()
    del doc["permissions"]["payment.adjust"]["approve_permission"]
    assert "second_approver_above_minor and approve_permission go together" in refused(doc)
    doc = default_doc()
    doc["permissions"]["payment.adjust"]["approve_permission"] = "payment.approve"
    assert "permissions.payment.adjust.approve_permission: unknown permission 'payment.approve'" in refused(doc)


def test_invalid_names_are_refused() -> None:
    doc = default_doc()
    doc["roles"]["Super Admin"] = copy.deepcopy(doc["roles"]["admin"])
    assert "roles.Super Admin" in refused(doc)


def test_duplicate_keys_are_refused_with_the_line() -> None:
    text = DEFAULT.read_text() + "\n  admin:\n    description: again\n"
    msg = refused(text)
    assert "duplicate key 'admin'" in msg and "line" in msg


def test_not_yaml_or_not_a_mapping_is_refused() -> None:
    assert "not valid YAML" in refused("roles: [unclosed")
    assert "expected a mapping at the top" in refused("- a\n- b\n")
