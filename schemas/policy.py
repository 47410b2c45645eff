"""The authorization policy file: roles, their grants, permissions and PII fields, as data.

The file is the regulator-facing statement of who may do what, so it is parsed strictly:
an unknown key, a wrong type, a grant naming a permission or condition that does not exist,
or a PII field with an unknown mask is refused at load time with the path of the offending
part, never silently ignored (a typo in a grant must not quietly remove or widen access).

Conditions are implemented by the engine (`domain.policy`); the file refers to them by the
names in `CONDITIONS`, which is the one list both sides agree on.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

# name -> what must hold for a grant carrying it to apply. Brand and jurisdiction scope are
# enforced on every decision anyway; naming them in a grant only documents it.
CONDITIONS: dict[str, str] = {
    "brand_scope": "the resource's brand is unset or inside the operator's brands",
    "jurisdiction_scope": "the resource's jurisdiction is unset or inside the operator's jurisdictions",
    "assigned_vip": "the operator is the player's assigned VIP manager",
    "not_self": "the resource is not the operator's own (no approving one's own request, no editing one's own roles)",
    "self_only": "the resource is the operator's own (own sessions, own second factor)",
}

# How a PII value is shown to an operator who may not read it.
MaskStyle = Literal["email", "phone", "date", "initial", "full"]

PermissionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=100)]
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
FieldName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Description = Annotated[str, Field(min_length=1, max_length=500)]
Threshold = Annotated[StrictInt, Field(ge=0, le=10**15)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PermissionSpec(_Strict):
    description: Description
    # Amounts (absolute value, integer minor units) above this need a second, different
    # operator holding `approve_permission`.
    second_approver_above_minor: Threshold | None = None
    approve_permission: PermissionName | None = None
    # A decision for this permission carries the PII fields to mask unless the operator also
    # holds the policy's `pii_read_permission` on the same resource.
    shows_pii: StrictBool = False

    @model_validator(mode="after")
    def _threshold_has_approver(self) -> PermissionSpec:
        if (self.second_approver_above_minor is None) != (self.approve_permission is None):
            raise ValueError("second_approver_above_minor and approve_permission go together")
        return self


class Grant(_Strict):
    permissions: Annotated[list[PermissionName], Field(min_length=1)]
    conditions: list[str] = []
    # Above this amount (absolute value, minor units) the grant does not apply.
    max_amount_minor: Threshold | None = None


class RoleSpec(_Strict):
    description: Description
    grants: list[Grant] = []


class CommonGrants(_Strict):
    description: Description
    grants: Annotated[list[Grant], Field(min_length=1)]


class Policy(_Strict):
    version: Literal[1] = 1
    pii_read_permission: PermissionName
    pii_fields: Annotated[dict[FieldName, MaskStyle], Field(min_length=1)]
    permissions: Annotated[dict[PermissionName, PermissionSpec], Field(min_length=1)]
    # Grants every role has on top of its own (own sessions, own second factor, dashboard).
    every_role: CommonGrants | None = None
    roles: Annotated[dict[RoleName, RoleSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _references(self) -> Policy:
        problems: list[str] = []
        known = self.permissions

        def check_grants(where: str, grants: list[Grant]) -> None:
            for i, grant in enumerate(grants):
                for j, name in enumerate(grant.permissions):
                    if name not in known:
                        problems.append(f"{where}.grants[{i}].permissions[{j}]: unknown permission {name!r}")
                for j, cond in enumerate(grant.conditions):
                    if cond not in CONDITIONS:
                        problems.append(f"{where}.grants[{i}].conditions[{j}]: unknown condition {cond!r} "
                                        f"(known: {', '.join(sorted(CONDITIONS))})")
                if "self_only" in grant.conditions and "not_self" in grant.conditions:
                    problems.append(f"{where}.grants[{i}].conditions: self_only and not_self can never both hold")

        if self.pii_read_permission not in known:
            problems.append(f"pii_read_permission: unknown permission {self.pii_read_permission!r}")
        elif known[self.pii_read_permission].shows_pii:
            problems.append(f"permissions.{self.pii_read_permission}.shows_pii: the PII permission cannot mask itself")
        for name, perm in known.items():
            approver = perm.approve_permission
            if approver is not None and approver not in known:
                problems.append(f"permissions.{name}.approve_permission: unknown permission {approver!r}")
            if approver == name:
                problems.append(f"permissions.{name}.approve_permission: a permission cannot approve itself")
        if self.every_role is not None:
            check_grants("every_role", self.every_role.grants)
        for role, spec in self.roles.items():
            check_grants(f"roles.{role}", spec.grants)
        if problems:
            raise ValueError("; ".join(problems))
        return self
