"""Help-desk routing: which team a ticket goes to, and which agent of it takes the ticket. Pure.

- `team_for(config, category, language)`: the most specific matching rule wins: an exact
  category with a matching language, then the category alone (`language: *`), then the language
  alone (`category: *`), then `*`/`*`; nothing matching: the default team. A language matches a
  rule's language when equal or when the rule's is its primary subtag (`de` matches `de-AT`),
  the longer rule language first; case does not matter.
- `choose_agent(agents, team, config)`: among the agents who work the team, are `available`
  and carry fewer active tickets than the team's `max_load`, the least loaded; ties go to the
  agent who has waited longest since their last assignment (None: never), then to the smallest
  agent id, so the choice is a function of its inputs (no randomness, no input order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from schemas.helpdesk_routing import PresenceStatus, RoutingConfig, RoutingRule


@dataclass(frozen=True, slots=True)
class AgentState:
    agent_id: str
    status: PresenceStatus
    load: int  # active tickets (not solved, not closed) assigned to the agent
    teams: frozenset[str] = field(default_factory=frozenset)
    last_assigned_at: datetime | None = None


def _language_rank(rule_language: str, language: str) -> int | None:
    """How well a rule's language matches (higher is better), None if it does not."""
    rule, lang = rule_language.lower(), language.lower()
    if rule == "*":
        return 0
    if lang == rule or lang.startswith(rule + "-"):
        return 1 + rule.count("-")
    return None


def _rank(rule: RoutingRule, category: str, language: str) -> tuple[int, int] | None:
    lang = _language_rank(rule.language, language)
    if lang is None:
        return None
    if rule.category == "*":
        return 0, lang
    if rule.category == category:
        return 1, lang
    return None


def team_for(config: RoutingConfig, category: str, language: str) -> str:
    best: tuple[tuple[int, int], int] | None = None
    best_team = config.default_team
    for index, rule in enumerate(config.rules):
        rank = _rank(rule, category, language)
        if rank is None:
            continue
        # Earlier rules win among equally specific ones (the validator forbids exact duplicates).
        key = (rank, -index)
        if best is None or key > best:
            best, best_team = key, rule.team
    return best_team


def members_of(config: RoutingConfig, team: str, agent_id: str, name: str) -> bool:
    spec = config.team(team)
    return spec is not None and (agent_id in spec.members or name in spec.members)


def configured_teams(config: RoutingConfig, agent_id: str, name: str) -> list[str]:
    """The teams the routing file lists an agent in (by id or username)."""
    return [t.name for t in config.teams if agent_id in t.members or name in t.members]


def _wait_key(agent: AgentState) -> tuple[int, float]:
    # Never assigned waits longest; then the oldest last assignment.
    if agent.last_assigned_at is None:
        return 0, 0.0
    return 1, agent.last_assigned_at.timestamp()


def eligible(agents: Iterable[AgentState], team: str, config: RoutingConfig) -> list[AgentState]:
    spec = config.team(team)
    if spec is None:
        return []
    return [a for a in agents if a.status == "available" and team in a.teams and a.load < spec.max_load]


def choose_agent(agents: Sequence[AgentState], team: str, config: RoutingConfig) -> str | None:
    """The agent a new ticket of `team` is assigned to, or None when nobody can take it."""
    if not config.auto_assign:
        return None
    pool = eligible(agents, team, config)
    if not pool:
        return None
    return min(pool, key=lambda a: (a.load, _wait_key(a), a.agent_id)).agent_id
