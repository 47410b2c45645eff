"""Routing rules: the team of a (category, language), and the agent a new ticket goes to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.routing import AgentState, choose_agent, configured_teams, eligible, team_for
from schemas.helpdesk_routing import RoutingConfig, RoutingRule, TeamSpec

TEAMS = ["support", "payments", "compliance", "support-de", "vip"]
CATEGORIES = ["general", "payments", "kyc", "bonus", "phone"]
LANGUAGES = ["en", "de", "de-AT", "pt", "pt-BR", "fr"]


def config(rules: list[RoutingRule], max_load: int = 3, auto_assign: bool = True) -> RoutingConfig:
    return RoutingConfig(default_team="support", teams=[TeamSpec(name=t, max_load=max_load) for t in TEAMS],
                         rules=rules, auto_assign=auto_assign)


rules_st = st.lists(
    st.builds(RoutingRule, category=st.sampled_from(["*", *CATEGORIES]),
              language=st.sampled_from(["*", "en", "de", "de-AT", "pt"]), team=st.sampled_from(TEAMS)),
    max_size=12, unique_by=lambda r: (r.category, r.language.lower()),
)


def matches(rule: RoutingRule, category: str, language: str) -> bool:
    lang = language.lower()
    return (rule.category in ("*", category)
            and (rule.language == "*" or lang == rule.language.lower() or lang.startswith(rule.language.lower() + "-")))


@given(rules_st, st.sampled_from(CATEGORIES), st.sampled_from(LANGUAGES))
def test_the_team_is_the_most_specific_matching_rule_or_the_default(rules: list[RoutingRule], category: str,
                                                                     language: str) -> None:
    team = team_for(config(rules), category, language)
    matching = [r for r in rules if matches(r, category, language)]
    if not matching:
        assert team == "support"
        return
    # No matching rule is more specific than the chosen one.
    def rank(r: RoutingRule) -> tuple[int, int]:
        return (r.category != "*", 0 if r.language == "*" else 1 + r.language.count("-"))

    best = max(rank(r) for r in matching)
    assert team in {r.team for r in matching if rank(r) == best}
    assert team == next(r.team for r in matching if rank(r) == best)  # the first of them, in file order


def test_category_beats_language_and_a_language_matches_its_regional_variants() -> None:
    c = config([RoutingRule(category="payments", team="payments"), RoutingRule(language="de", team="support-de"),
                RoutingRule(category="payments", language="de", team="vip")])
    assert team_for(c, "payments", "en") == "payments"
    assert team_for(c, "general", "de-AT") == "support-de"
    assert team_for(c, "payments", "DE-at") == "vip"
    assert team_for(c, "general", "fr") == "support"


agents_st = st.lists(
    st.builds(AgentState, agent_id=st.text("abcdef", min_size=1, max_size=4),
              status=st.sampled_from(["available", "away", "offline"]), load=st.integers(0, 5),
              teams=st.frozensets(st.sampled_from(TEAMS), max_size=3),
              last_assigned_at=st.none() | st.integers(0, 1000).map(
                  lambda s: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=s))),
    max_size=10, unique_by=lambda a: a.agent_id,
)


@given(agents_st, st.sampled_from(TEAMS), st.randoms())
def test_the_chosen_agent_is_available_in_the_team_under_capacity_and_least_loaded(
        agents: list[AgentState], team: str, rnd: object) -> None:
    c = config([])
    chosen = choose_agent(agents, team, c)
    pool = [a for a in agents if a.status == "available" and team in a.teams and a.load < 3]
    assert (chosen is None) == (not pool)
    if chosen is None:
        return
    pick = next(a for a in agents if a.agent_id == chosen)
    assert pick in pool and pick.load == min(a.load for a in pool)
    # Deterministic whatever the order the agents are listed in.
    shuffled = list(agents)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert choose_agent(shuffled, team, c) == chosen


def test_ties_go_to_the_agent_who_waited_longest_then_the_smallest_id() -> None:
    c = config([])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    a = AgentState("a", "available", 1, frozenset({"support"}), t0 + timedelta(minutes=5))
    b = AgentState("b", "available", 1, frozenset({"support"}), t0)
    never = AgentState("z", "available", 1, frozenset({"support"}), None)
    assert choose_agent([a, b], "support", c) == "b"
    assert choose_agent([a, b, never], "support", c) == "z"
    assert choose_agent([AgentState("y", "available", 0, frozenset({"support"})),
                         AgentState("x", "available", 0, frozenset({"support"}))], "support", c) == "x"


def test_nobody_is_chosen_when_auto_assign_is_off_or_everyone_is_full_away_or_elsewhere() -> None:
    full = AgentState("a", "available", 3, frozenset({"support"}))
    away = AgentState("b", "away", 0, frozenset({"support"}))
    elsewhere = AgentState("c", "available", 0, frozenset({"payments"}))
    assert choose_agent([full, away, elsewhere], "support", config([])) is None
    assert eligible([full, away, elsewhere], "payments", config([])) == [elsewhere]
    assert choose_agent([elsewhere], "payments", config([], auto_assign=False)) is None
    assert choose_agent([elsewhere], "no-such-team", config([])) is None


def test_members_listed_by_username_or_id_are_in_their_teams() -> None:
    c = RoutingConfig(default_team="support", teams=[TeamSpec(name="support", members=["alice"]),
                                                     TeamSpec(name="vip", members=["op-1", "bob"])])
    assert configured_teams(c, "op-1", "alice") == ["support", "vip"]
    assert configured_teams(c, "op-2", "carol") == []


@pytest.mark.parametrize(("raw", "where"), [
    ({"default_team": "nope", "teams": [{"name": "support"}]}, "default_team"),
    ({"default_team": "support", "teams": [{"name": "support"}], "rules": [{"team": "ghost"}]}, "rules[0].team"),
    ({"default_team": "support", "teams": [{"name": "support"}, {"name": "support"}]}, "listed twice"),
    ({"default_team": "support", "teams": [{"name": "support"}],
      "rules": [{"category": "kyc", "team": "support"}, {"category": "kyc", "team": "support"}]}, "a second rule"),
    ({"default_team": "support", "teams": [{"name": "support"}], "rules": [{"category": "KYC!", "team": "support"}]},
     "category"),
])
def test_a_bad_routing_file_is_refused_naming_the_part(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RoutingConfig.model_validate(raw)
    assert where in str(exc.value)


def test_the_packaged_routing_file_is_valid() -> None:
    from adapters.settings import Settings
    from serve_apps.helpdesk.service import load_routing

    c = load_routing(Settings(helpdesk_routing_file=""))
    assert c.default_team == "support" and team_for(c, "kyc", "en") == "compliance"
