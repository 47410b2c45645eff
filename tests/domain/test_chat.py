"""Live-chat rules (domain/chat.py): bodies, frames, the player's token, the per-socket rate."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import chat as rules
from domain.errors import Forbidden, InvalidInput, RateLimited, Unauthorized
from schemas.chat import JoinFrame, MessageFrame, TypingFrame

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = rules.token_key("test-secret")


def grant(seconds: int = 600) -> rules.ChatGrant:
    return rules.grant_for(uuid.uuid4(), "demo", uuid.uuid4(), uuid.uuid4(), T0, seconds)


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_a_body_is_kept_stripped_when_it_has_1_to_max_characters(body: str, limit: int) -> None:
    text = body.strip()
    if 1 <= len(text) <= limit:
        assert rules.check_body(body, limit) == text
    else:
        with pytest.raises(InvalidInput) as err:
            rules.check_body(body, limit)
        assert err.value.field == "body"


@given(st.text(max_size=200))
def test_any_text_is_a_frame_or_an_error_naming_a_field(text: str) -> None:
    try:
        frame = rules.parse_frame(text)
    except InvalidInput as exc:
        assert exc.field
    else:
        assert frame.type in ("message", "typing", "join", "leave")


def test_frames_parse_by_type_and_name_the_wrong_field() -> None:
    cid, tid = uuid.uuid4(), uuid.uuid4()
    assert rules.parse_frame(json.dumps({"type": "message", "client_id": str(cid), "body": "hi"})) == MessageFrame(
        type="message", client_id=cid, body="hi")
    assert rules.parse_frame('{"type": "typing"}') == TypingFrame(type="typing")
    assert rules.parse_frame(json.dumps({"type": "join", "ticket_id": str(tid), "after": 3})) == JoinFrame(
        type="join", ticket_id=tid, after=3)
    cases = {'{"type": "message", "body": "x"}': "client_id", '{"type": "join", "ticket_id": "x"}': "ticket_id",
             json.dumps({"type": "join", "ticket_id": str(tid), "after": -1}): "after", '{"type": "nope"}': "type",
             '{"type": "typing", "extra": 1}': "extra", "[1]": "frame", "{": "frame", "x" * 100_001: "body"}
    for text, field in cases.items():
        with pytest.raises(InvalidInput) as err:
            rules.parse_frame(text)
        assert err.value.field == field, text
    with pytest.raises(InvalidInput):
        rules.parse_frame(b'{"type": "typing"}')


def test_a_token_gives_back_its_grant_until_it_expires() -> None:
    g = grant(600)
    token = rules.issue_token(KEY, g, T0)
    assert rules.read_token(KEY, token, T0 + timedelta(seconds=599)) == g
    with pytest.raises(Unauthorized) as err:
        rules.read_token(KEY, token, T0 + timedelta(seconds=600))
    assert err.value.field == "token"


def test_forged_foreign_and_malformed_tokens_are_refused() -> None:
    g = grant()
    forged = rules.issue_token(rules.token_key("other-secret"), g, T0)
    foreign = jwt.encode({"aud": "someone-else", "sub": str(g.player_id), "brand": "demo", "tid": str(g.ticket_id),
                          "cid": str(g.chat_id), "exp": int(g.expires_at.timestamp())}, KEY, algorithm="HS256")
    unsigned = jwt.encode({"aud": rules.AUDIENCE, "sub": str(g.player_id)}, "", algorithm="none")
    missing = jwt.encode({"aud": rules.AUDIENCE, "sub": str(g.player_id), "exp": 9_999_999_999}, KEY,
                         algorithm="HS256")
    for token in (forged, foreign, unsigned, missing, "", None, "a.b.c", "x" * 3000):
        with pytest.raises(Unauthorized):
            rules.read_token(KEY, token, T0)


def test_the_token_key_is_derived_not_the_secret() -> None:
    assert rules.token_key("s") != b"s" and rules.token_key("s") == rules.token_key("s") != rules.token_key("t")


@given(st.uuids(), st.uuids())
def test_a_player_writes_only_to_the_tokens_chat(named: uuid.UUID, other: uuid.UUID) -> None:
    g = rules.ChatGrant(uuid.uuid4(), "demo", named, uuid.uuid4(), T0)
    assert rules.player_target(g, None) == named
    assert rules.player_target(g, named) == named
    if other != named:
        with pytest.raises(Forbidden):
            rules.player_target(g, other)


@given(st.text(min_size=1, max_size=20, alphabet="abcdefghij"), st.uuids(), st.uuids())
def test_ids_are_derived_and_brands_do_not_collide(brand: str, chat_id: uuid.UUID, client_id: uuid.UUID) -> None:
    tid = rules.ticket_id_for(brand, chat_id)
    assert tid == rules.ticket_id_for(brand, chat_id) != rules.ticket_id_for(brand + "x", chat_id)
    assert rules.line_message_id(tid, client_id) == rules.line_message_id(tid, client_id) != tid


@given(st.lists(st.floats(min_value=0, max_value=0.5), max_size=200), st.integers(min_value=1, max_value=10))
def test_the_rate_allows_the_burst_then_the_sustained_rate(gaps: list[float], burst: int) -> None:
    bucket, now, taken = rules.TokenBucket(rate=2.0, burst=burst), 0.0, 0
    for gap in gaps:
        now += gap
        try:
            bucket.take(now)
            taken += 1
        except RateLimited as exc:
            assert exc.extra["retry_after"] >= 0
    assert taken <= burst + 2.0 * now + 1e-9
