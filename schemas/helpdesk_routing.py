"""Help-desk routing configuration (teams, rules) and agent presence bodies. Rules in `domain.routing`.

Decisions fixed here:

- A team is a name, the operators who work it (usernames or operator ids, listed in the file)
  and the most active tickets one of its agents carries before auto-assignment skips them.
  Membership may also be declared at runtime: an agent's presence names the teams they work
  (`PresenceUpdate.teams`), so a team listed without members still gets agents.
- A rule sends a (category, language) to a team; `*` matches anything. The most specific
  matching rule wins (category and language > category > language); a language rule for `pt`
  matches `pt-BR`. Nothing matching: the default team.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TeamName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Member = Annotated[str, Field(min_length=1, max_length=128)]
PresenceStatus = Literal["available", "away", "offline"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeamSpec(_Model):
    name: TeamName
    description: Annotated[str, Field(max_length=300)] = ""
    members: Annotated[list[Member], Field(max_length=1000)] = Field(default_factory=list)
    # Active tickets (not solved or closed) an agent may carry before auto-assignment skips them.
    max_load: Annotated[int, Field(ge=1, le=10_000)] = 25


class RoutingRule(_Model):
    category: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(\*|[a-z0-9][a-z0-9_.-]*)$")] = "*"
    language: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^(\*|[a-z]{2,3}(-[A-Za-z0-9]{2,8})*)$")] = "*"
    team: TeamName


class RoutingConfig(_Model):
    version: Literal[1] = 1
    default_team: TeamName
    teams: Annotated[list[TeamSpec], Field(min_length=1, max_length=200)]
    rules: Annotated[list[RoutingRule], Field(max_length=2000)] = Field(default_factory=list)
    # Auto-assign new tickets to the least-loaded available agent of their team.
    auto_assign: bool = True

    @model_validator(mode="after")
    def _teams_known(self) -> RoutingConfig:
        names = [t.name for t in self.teams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"teams: {dupes[0]} is listed twice")
        if self.default_team not in names:
            raise ValueError(f"default_team: {self.default_team} is not a team")
        for i, rule in enumerate(self.rules):
            if rule.team not in names:
                raise ValueError(f"rules[{i}].team: {rule.team} is not a team")
        seen: set[tuple[str, str]] = set()
        for i, rule in enumerate(self.rules):
            key = (rule.category, rule.language.lower())
            if key in seen:
                raise ValueError(f"rules[{i}]: a second rule for category {key[0]} and language {key[1]}")
            seen.add(key)
        return self

    def team(self, name: str) -> TeamSpec | None:
        return next((t for t in self.teams if t.name == name), None)


class PresenceUpdate(_Model):
    status: PresenceStatus
    # The teams the agent works now; None keeps the teams the routing file lists them in.
    teams: Annotated[list[TeamName], Field(max_length=50)] | None = None


class AgentPublic(_Model):
    agent_id: str
    name: str
    status: PresenceStatus
    teams: list[str]
    load: int
    last_seen: str | None
