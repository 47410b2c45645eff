"""Authorization: role grants (RBAC) with attribute conditions (ABAC), read from a policy file.

Rules:
- Deny by default. An unknown permission is denied; a subject is allowed a permission only if
  some grant of one of its roles names it and every condition of that grant holds. Roles the
  policy does not know are ignored (an identity provider may send groups we do not map).
- Brand and jurisdiction scope are enforced on every decision, before any grant: a resource
  that carries a brand (or jurisdiction) outside the subject's is out of reach whatever the
  grants say. `ALL` in a subject's brands/jurisdictions means every one.
- Amounts are compared by absolute value (a 5,000.00 debit is as large as a credit). Above a
  permission's `second_approver_above_minor` the decision is allowed with
  `needs_second_approver`; above a grant's `max_amount_minor` that grant does not apply. When a
  resource is given without an amount, the amount counts as above every threshold (fail safe:
  a caller that forgets the amount gets four eyes, not none); with no resource at all (asking
  "may this operator ever...", e.g. to show a button) amounts are not considered.
- A decision for a permission marked `shows_pii` (player.read) lists the PII fields to mask
  unless the subject also holds the policy's PII permission (player.pii.read) on the same
  resource; `mask` applies that to data.

The policy is compiled once into dicts keyed by permission then role, so a decision is a few
dict lookups and the condition checks of the one or two grants that could apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from schemas.policy import CONDITIONS, Grant, MaskStyle, Policy

ALL = "*"  # in a subject's brands/jurisdictions: every brand / every jurisdiction


@dataclass(frozen=True, slots=True)
class Subject:
    """The operator making a request."""

    operator_id: str
    roles: frozenset[str]
    brands: frozenset[str]  # brand scope, may contain ALL
    jurisdictions: frozenset[str]  # ISO 3166-1 alpha-2 country codes, may contain ALL

    @staticmethod
    def of(operator_id: str, roles: Iterable[str], brands: Iterable[str], jurisdictions: Iterable[str]) -> Subject:
        """A subject from stored or identity-provider lists; country codes upper-cased (a
        lower-case "mt" from a directory must not silently lock an operator out)."""
        return Subject(operator_id, frozenset(roles), frozenset(brands),
                       frozenset(j if j == ALL else j.upper() for j in jurisdictions))


@dataclass(frozen=True, slots=True)
class Resource:
    """Attributes of what is acted on; None = not applicable."""

    kind: str  # "player", "operator", "api_key", "session", "audit", "payment", ...
    id: str | None = None
    brand: str | None = None
    jurisdiction: str | None = None  # the player's country
    vip_manager: str | None = None  # operator_id of the player's assigned VIP manager
    owner: str | None = None  # operator_id who owns/requested the resource
    amount_minor: int | None = None  # money amount of the action, integer minor units


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    permission: str
    reason: str
    masked_fields: frozenset[str] = frozenset()
    needs_second_approver: bool = False


@dataclass(frozen=True, slots=True)
class GrantInfo:
    permissions: tuple[str, ...]
    conditions: tuple[str, ...]
    max_amount_minor: int | None
    every_role: bool  # comes from the policy's `every_role` section


@dataclass(frozen=True, slots=True)
class RoleInfo:
    name: str
    description: str
    grants: tuple[GrantInfo, ...]  # the role's own grants, then those every role has


# ---------------------------------------------------------------------------- conditions
# Each returns None when it holds, else why it does not (used in the decision's reason).

Check = Callable[[Subject, Resource | None], str | None]


def _brand_scope(subject: Subject, resource: Resource | None) -> str | None:
    if resource is None or resource.brand is None or ALL in subject.brands or resource.brand in subject.brands:
        return None
    return f"{resource.kind} brand {resource.brand!r} outside operator's brands"


def _jurisdiction_scope(subject: Subject, resource: Resource | None) -> str | None:
    if (resource is None or resource.jurisdiction is None or ALL in subject.jurisdictions
            or resource.jurisdiction in subject.jurisdictions):
        return None
    return f"{resource.kind} jurisdiction {resource.jurisdiction!r} outside operator's jurisdictions"


def _assigned_vip(subject: Subject, resource: Resource | None) -> str | None:
    if resource is not None and resource.vip_manager == subject.operator_id:
        return None
    kind = resource.kind if resource is not None else "resource"
    return f"operator is not the {kind}'s assigned VIP manager"


def _not_self(subject: Subject, resource: Resource | None) -> str | None:
    if resource is None or resource.owner is None or resource.owner != subject.operator_id:
        return None
    return f"the {resource.kind} is the operator's own (needs another operator)"


def _self_only(subject: Subject, resource: Resource | None) -> str | None:
    if resource is not None and resource.owner == subject.operator_id:
        return None
    kind = resource.kind if resource is not None else "resource"
    return f"the {kind} is not the operator's own"


CHECKS: dict[str, Check] = {
    "brand_scope": _brand_scope,
    "jurisdiction_scope": _jurisdiction_scope,
    "assigned_vip": _assigned_vip,
    "not_self": _not_self,
    "self_only": _self_only,
}
assert set(CHECKS) == set(CONDITIONS), "the engine must implement exactly the conditions the policy file may name"
# Enforced on every decision, so not re-checked per grant.
_ALWAYS = frozenset({"brand_scope", "jurisdiction_scope"})
_DENIED_CACHE = 4096  # bounded: role sets come from callers


# ---------------------------------------------------------------------------- masking

_MASK = "****"


def mask_value(style: MaskStyle, value: Any) -> Any:
    """A masked form of a PII value that never contains the value itself: every revealed piece
    is strictly shorter than the value and separated by '*' (a value that already holds '*'
    is masked whole, so it cannot come out unchanged). None stays None: absence is not PII."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: mask_value("full", v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(style, v) for v in value]
    if style == "date":
        return "****-**-**"
    if not isinstance(value, str) or not value or "*" in value:
        return _MASK
    if style == "email":
        local, at, domain = value.rpartition("@")
        if at and local and domain:
            return f"{local[0] if len(local) > 1 else ''}***@{domain}"
        return _MASK
    if style == "phone":
        digits = "".join(filter(str.isdigit, value))
        if len(digits) < 8:
            return _MASK
        plus = "+" if value.lstrip().startswith("+") else ""
        return plus + digits[:2] + "*" * (len(digits) - 4) + digits[-2:]
    if style == "initial":
        return value[0] + "***" if len(value) > 1 else "***"
    return _MASK


def _walk(data: Any, styles: Mapping[str, MaskStyle] | None) -> Any:
    """A copy of nested dicts/lists, with the PII keys' values masked when styles is given."""
    if isinstance(data, Mapping):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            style = styles.get(key) if styles is not None and isinstance(key, str) else None
            out[key] = mask_value(style, value) if style is not None else _walk(value, styles)
        return out
    if isinstance(data, list):
        return [_walk(v, styles) for v in data]
    if isinstance(data, tuple):
        return tuple(_walk(v, styles) for v in data)
    return data  # scalars are immutable: shared, not copied


# ---------------------------------------------------------------------------- engine


@dataclass(frozen=True, slots=True)
class _Compiled:
    role: str
    order: tuple[str, int]  # reasons name grants in a stable order, whatever the set order
    checks: tuple[Check, ...]
    max_amount: int | None
    granted: str  # reason when this grant allows
    # The answers when it allows, built once: a frozen dataclass costs about a microsecond to build.
    allow: Decision
    allow_masked: Decision

    def refusal(self, subject: Subject, resource: Resource | None) -> str | None:
        for check in self.checks:
            why = check(subject, resource)
            if why is not None:
                return why
        if self.max_amount is not None and resource is not None:
            amount = resource.amount_minor
            if amount is None:
                return f"amount unknown and the grant is limited to {self.max_amount} minor units"
            if abs(amount) > self.max_amount:
                return f"amount {amount} above the grant's limit of {self.max_amount} minor units"
        return None


@dataclass(frozen=True, slots=True)
class _Permission:
    threshold: int | None
    approve_permission: str | None
    shows_pii: bool


class PolicyEngine:
    """Decisions over one parsed policy. Safe to share between threads and coroutines: nothing
    changes after construction but a bounded cache of refusals (plain dict stores)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._perms: dict[str, _Permission] = {
            name: _Permission(spec.second_approver_above_minor, spec.approve_permission, spec.shows_pii)
            for name, spec in policy.permissions.items()
        }
        self._pii_permission = policy.pii_read_permission
        self._pii_styles: dict[str, MaskStyle] = dict(policy.pii_fields)
        self._pii_fields = frozenset(policy.pii_fields)
        common = policy.every_role.grants if policy.every_role is not None else []
        by_perm: dict[str, dict[str, list[_Compiled]]] = {name: {} for name in self._perms}
        role_perms: dict[str, frozenset[str]] = {}
        infos: dict[str, RoleInfo] = {}
        for role, spec in policy.roles.items():
            grants: list[tuple[Grant, bool]] = [(g, False) for g in spec.grants] + [(g, True) for g in common]
            perms: set[str] = set()
            for index, (grant, shared) in enumerate(grants):
                checks = tuple(CHECKS[c] for c in dict.fromkeys(grant.conditions) if c not in _ALWAYS)
                granted = f"granted to every role (here {role})" if shared else f"granted to role {role}"
                for name in dict.fromkeys(grant.permissions):
                    by_perm[name].setdefault(role, []).append(_Compiled(
                        role, (role, index), checks, grant.max_amount_minor, granted,
                        Decision(True, name, granted), Decision(True, name, granted, self._pii_fields)))
                    perms.add(name)
            role_perms[role] = frozenset(perms)
            infos[role] = RoleInfo(role, spec.description, tuple(
                GrantInfo(tuple(g.permissions), tuple(g.conditions), g.max_amount_minor, shared)
                for g, shared in grants))
        self._by_perm: dict[str, dict[str, tuple[_Compiled, ...]]] = {
            name: {role: tuple(gs) for role, gs in table.items()} for name, table in by_perm.items()
        }
        self._role_perms = role_perms
        self._roles: Mapping[str, RoleInfo] = MappingProxyType(infos)
        # (roles, permission) -> the refusal: the same few role sets ask the same things all day.
        self._denied: dict[tuple[frozenset[str], str], Decision] = {}

    # -- decisions

    def decide(self, subject: Subject, permission: str, resource: Resource | None = None) -> Decision:
        perm = self._perms.get(permission)
        if perm is None:
            return Decision(False, permission, f"unknown permission {permission!r}")
        table = self._by_perm[permission]
        found = [g for role in subject.roles if (gs := table.get(role)) for g in gs]
        if not found:
            return self._no_grant(subject, permission)
        if resource is not None:
            out_of_scope = _brand_scope(subject, resource) or _jurisdiction_scope(subject, resource)
            if out_of_scope is not None:
                return Decision(False, permission, out_of_scope)
        if len(found) > 1:
            found.sort(key=_order)
        refusals: dict[str, None] = {}
        for grant in found:
            why = grant.refusal(subject, resource)
            if why is None:
                return self._allow(subject, perm, resource, grant)
            refusals[f"role {grant.role}: {why}"] = None
        return Decision(False, permission, f"no grant for {permission} applies: " + "; ".join(refusals))

    def _allow(self, subject: Subject, perm: _Permission, resource: Resource | None, grant: _Compiled) -> Decision:
        masked = perm.shows_pii and not self.decide(subject, self._pii_permission, resource).allowed
        if perm.threshold is not None and resource is not None:
            amount = resource.amount_minor
            if amount is None or abs(amount) > perm.threshold:
                shown = "unknown" if amount is None else str(amount)
                reason = (f"{grant.granted}; amount {shown} above {perm.threshold} minor units: "
                          f"another operator holding {perm.approve_permission} must approve")
                return Decision(True, grant.allow.permission, reason,
                                self._pii_fields if masked else frozenset(), True)
        return grant.allow_masked if masked else grant.allow

    def _no_grant(self, subject: Subject, permission: str) -> Decision:
        key = (subject.roles, permission)
        cached = self._denied.get(key)
        if cached is not None:
            return cached
        known = sorted(r for r in subject.roles if r in self._roles)
        if not known:
            reason = f"operator has no role of the policy, so no grant for {permission}"
        elif len(known) == 1:
            reason = f"role {known[0]} has no grant for {permission}"
        else:
            reason = f"roles {', '.join(known)} have no grant for {permission}"
        decision = Decision(False, permission, reason)
        if len(self._denied) < _DENIED_CACHE and isinstance(subject.roles, frozenset):
            self._denied[key] = decision
        return decision

    def allowed(self, subject: Subject, permission: str, resource: Resource | None = None) -> bool:
        return self.decide(subject, permission, resource).allowed

    def decide_role(self, subject: Subject, permission: str) -> Decision:
        """The gate before the resource is known (a route's first check): allowed if some grant
        of the subject's roles names the permission, whatever its conditions. The resource must
        then be decided with `decide`. `decide(subject, p, None)` is stricter on purpose: with no
        resource, `assigned_vip` and `self_only` cannot hold, so a missing resource never
        unlocks a per-resource grant (nor clear PII)."""
        if permission not in self._perms:
            return Decision(False, permission, f"unknown permission {permission!r}")
        table = self._by_perm[permission]
        holders = [role for role in subject.roles if role in table]
        if not holders:
            return self._no_grant(subject, permission)
        return Decision(True, permission, f"role {min(holders)} holds a grant for {permission} "
                                          "(its conditions are checked on the resource)")

    # -- views

    def permissions_for(self, roles: Iterable[str]) -> frozenset[str]:
        """Every permission some grant of these roles names, conditions ignored (menus)."""
        out: set[str] = set()
        for role in roles:
            out |= self._role_perms.get(role, frozenset())
        return frozenset(out)

    def known_permission(self, permission: str) -> bool:
        return permission in self._perms

    def approve_permission(self, permission: str) -> str | None:
        """The permission a second approver must hold for this one (None if it has no threshold)."""
        perm = self._perms.get(permission)
        return perm.approve_permission if perm is not None else None

    @property
    def roles(self) -> Mapping[str, RoleInfo]:
        return self._roles

    @property
    def pii_fields(self) -> frozenset[str]:
        return self._pii_fields

    @property
    def pii_permission(self) -> str:
        return self._pii_permission

    # -- data

    def mask(self, subject: Subject, data: Mapping[str, Any], resource: Resource | None = None) -> dict[str, Any]:
        """A copy of data (nested dicts and lists included) with every PII field masked, unless
        the subject holds the PII permission on the resource."""
        clear = self.decide(subject, self._pii_permission, resource).allowed
        out: dict[str, Any] = _walk(data, None if clear else self._pii_styles)
        return out


def _order(grant: _Compiled) -> tuple[str, int]:
    return grant.order
