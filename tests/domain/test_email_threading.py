"""Pure email rules: message ids, threading order, reply headers, quoted replies, loop protection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.email_threading import (
    auto_reply_reason,
    base_subject,
    bound_references,
    html_to_text,
    is_auto_reply,
    new_message_id,
    normalize_message_id,
    parse_authentication_results,
    parse_message_ids,
    reply_headers,
    reply_subject,
    strip_quoted_reply,
    thread_candidates,
    ticket_reference,
)


@dataclass
class Msg:
    message_id: str
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


@dataclass
class Ticket:
    short_id: str
    subject: str


_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~."
left_parts = st.text(alphabet=_ATEXT, min_size=1, max_size=40)
right_parts = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9-]{0,10}(\.[A-Za-z0-9]{1,8}){1,3}\Z")
ids = st.builds(lambda left, right: f"<{left}@{right.lower()}>", left_parts, right_parts)
whitespace = st.sampled_from(["", " ", "  ", "\t", "\r\n ", "\r\n\t", "\n "])


@given(left=left_parts, right=right_parts, before=whitespace, after=whitespace)
def test_message_id_normalisation_drops_folding_and_lowercases_the_domain(
    left: str, right: str, before: str, after: str
) -> None:
    header = f"{before}<{left}@{right}>{after}"
    assert normalize_message_id(header) == f"<{left}@{right.lower()}>"


@given(st.lists(ids, min_size=1, max_size=30, unique=True), st.lists(whitespace, min_size=30, max_size=30))
def test_references_round_trip_through_any_folding(values: list[str], seps: list[str]) -> None:
    header = "".join(f"{seps[i]} {value}" for i, value in enumerate(values))
    assert parse_message_ids(header) == values
    assert parse_message_ids(" ".join(parse_message_ids(header))) == values


@given(ids)
def test_normalising_is_idempotent(value: str) -> None:
    once = normalize_message_id(value)
    assert once is not None
    assert normalize_message_id(once) == once


def test_message_ids_keep_the_left_case_ignore_comments_and_repeats() -> None:
    header = "<AbC.123@Mail.Example.COM> (sent by x)\r\n <xyz@host.org> <abc.123@mail.example.com>"
    header += " <AbC.123@mail.example.com>"
    assert parse_message_ids(header) == ["<AbC.123@mail.example.com>", "<xyz@host.org>", "<abc.123@mail.example.com>"]


def test_a_bare_id_without_brackets_is_read_and_junk_is_not() -> None:
    assert parse_message_ids("abc@Example.com") == ["<abc@example.com>"]
    assert parse_message_ids("your message of Monday") == []
    assert parse_message_ids("<>") == []
    assert parse_message_ids(None) == []
    assert parse_message_ids("<@host> <left@>") == []


def test_thread_candidates_put_in_reply_to_first_then_references_newest_first() -> None:
    msg = Msg(
        message_id="<new@x.org>",
        in_reply_to=["<Parent@X.ORG>"],
        references=["<root@x.org>", "<mid@x.org>", "<parent@x.org>", "<new@x.org>"],
    )
    assert thread_candidates(msg) == ["<Parent@x.org>", "<parent@x.org>", "<mid@x.org>", "<root@x.org>"]


@given(st.lists(ids, max_size=10, unique=True), st.lists(ids, max_size=40, unique=True))
def test_thread_candidates_are_unique_and_cover_every_header_id(in_reply_to: list[str], references: list[str]) -> None:
    own = "<self@pitboss.test>"
    found = thread_candidates(Msg(own, in_reply_to, references))
    assert len(found) == len(set(found))
    assert set(found) == set(in_reply_to) | set(references)
    assert found[: len(in_reply_to)] == in_reply_to
    rest = [r for r in reversed(references) if r not in in_reply_to]
    assert found[len(in_reply_to) :] == rest


@given(st.lists(ids, max_size=200), st.integers(min_value=2, max_value=50))
def test_bounded_references_keep_the_root_and_the_newest(values: list[str], limit: int) -> None:
    kept = bound_references(values, limit)
    assert len(kept) == min(len(values), limit)
    if values:
        assert kept[0] == values[0]
        assert kept[-1] == values[-1]
    if len(values) > limit:
        assert kept[1:] == values[len(values) - limit + 1 :]
    else:
        assert kept == values


def test_bounded_references_need_room_for_root_and_parent() -> None:
    with pytest.raises(ValueError):
        bound_references(["<a@b.c>"], 1)


def test_ticket_reference_reads_the_first_tag_in_any_case() -> None:
    assert ticket_reference("Re: [#ABC123] Bonus missing") == "ABC123"
    assert ticket_reference("AW: Bonus [#abc123] fehlt [#ZZZ999]") == "ABC123"
    assert ticket_reference("Bonus missing #ABC123") is None
    assert ticket_reference("[#AB]") is None
    assert ticket_reference(None) is None


def test_reply_subject_carries_the_tag_once_without_old_prefixes() -> None:
    assert reply_subject("ABC123", "Re: AW: [#ABC123] Fwd: Re[2]: Bonus missing") == "Re: [#ABC123] Bonus missing"
    assert reply_subject("ABC123", "") == "Re: [#ABC123] (no subject)"
    assert base_subject("Re:   Withdrawal\r\n  pending") == "Withdrawal pending"
    with pytest.raises(ValueError):
        reply_subject("bad id!", "x")


@given(st.text(max_size=80))
def test_reply_subject_is_stable_when_replied_to_again(subject: str) -> None:
    once = reply_subject("ABC123", subject)
    assert reply_subject("ABC123", once) == once
    assert once.count("[#ABC123]") == 1
    assert "\n" not in once and "\r" not in once


def test_reply_headers_thread_under_the_newest_parent() -> None:
    ours = new_message_id("Help.Example.COM", uuid.UUID("12345678-1234-5678-1234-567812345678"))
    assert ours == "<12345678-1234-5678-1234-567812345678@help.example.com>"
    headers = reply_headers(Ticket("ABC123", "Bonus missing"), ours, ["<root@p.org>", "<Mid@P.org>", "<root@p.org>"])
    assert headers == {
        "Message-ID": ours,
        "Subject": "Re: [#ABC123] Bonus missing",
        "In-Reply-To": "<root@p.org>",
        "References": "<Mid@p.org> <root@p.org>",
    }
    assert "Auto-Submitted" not in headers


def test_reply_headers_without_parents_and_for_acknowledgements() -> None:
    headers = reply_headers(Ticket("ABC123", "Hi"), "<a@help.example.com>", [], auto=True)
    assert headers == {
        "Message-ID": "<a@help.example.com>",
        "Subject": "Re: [#ABC123] Hi",
        "Auto-Submitted": "auto-replied",
    }
    with pytest.raises(ValueError):
        reply_headers(Ticket("ABC123", "Hi"), "not an id", [])
    with pytest.raises(ValueError):
        new_message_id("not a domain", uuid.uuid4())


@given(st.lists(ids, min_size=1, max_size=100, unique=True))
def test_reply_headers_bound_references_and_keep_root_and_parent(parents: list[str]) -> None:
    headers = reply_headers(Ticket("ABC123", "x"), "<ours@help.example.com>", parents, max_references=20)
    refs = parse_message_ids(headers["References"])
    assert len(refs) == min(20, len(parents))
    assert refs[0] == parents[0] and refs[-1] == parents[-1]
    assert headers["In-Reply-To"] == parents[-1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Thanks, works now.\n\nOn Mon, 1 Jan 2024 at 10:00, Support <s@x.com> wrote:\n> old\n> text\n",
            "Thanks, works now.",
        ),
        ("Thanks!\n\nOn Mon, 1 Jan 2024 at 10:00, Support <s@x.com>\nwrote:\n\n> old\n", "Thanks!"),
        ("Danke!\n\nAm Mo., 1. Jan. 2024 um 10:00 Uhr schrieb Support <s@x.com>:\n> alt\n", "Danke!"),
        ("Danke!\nMax Muster schrieb am 01.01.2024 10:00:\n> alt", "Danke!"),
        ("Hi\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\nold", "Hi"),
        ("Hallo\n\n-----Ursprüngliche Nachricht-----\nVon: Support\nGesendet: Montag\n\nalt", "Hallo"),
        ("Hi\n\n________________________________\nFrom: Support <s@x>\nSent: Monday\nTo: me\n\nold", "Hi"),
        ("Hallo\n\nVon: Support <s@x>\nGesendet: Montag, 1. Januar 2024\nAn: mir\n\nalt", "Hallo"),
        ("My answer.\n\n> quoted tail\n> more\n", "My answer."),
        ("> q1\nanswer one\n> q2\nanswer two\n\n> tail\n", "> q1\nanswer one\n> q2\nanswer two"),
        ("> everything is quoted\n> here", "> everything is quoted\n> here"),
        ("On Mon, Ann wrote:\n> only a quote", "On Mon, Ann wrote:\n> only a quote"),
        (
            "I went on holiday and wrote: nothing.\nStill waiting.",
            "I went on holiday and wrote: nothing.\nStill waiting.",
        ),
        ("Line one\r\nLine two\r\n", "Line one\nLine two"),
    ],
)
def test_strip_quoted_reply(text: str, expected: str) -> None:
    assert strip_quoted_reply(text) == expected


@given(st.text(max_size=300))
def test_strip_quoted_reply_never_returns_nothing_for_a_message_with_text(text: str) -> None:
    out = strip_quoted_reply(text)
    assert bool(out.strip()) == bool(text.strip())


@pytest.mark.parametrize(
    ("headers", "envelope_from", "reason"),
    [
        ({"Auto-Submitted": "auto-replied"}, None, "Auto-Submitted: auto-replied"),
        ({"Auto-Submitted": "auto-generated; owner-email=x@y.z"}, None, "Auto-Submitted: auto-generated"),
        ({"Precedence": "Bulk"}, None, "Precedence: bulk"),
        ({"Precedence": "junk"}, None, "Precedence: junk"),
        ({"Precedence": "list"}, None, "Precedence: list"),
        ({"X-Autoreply": "yes"}, None, "x-autoreply header"),
        ({"X-Autorespond": "Out of office"}, None, "x-autorespond header"),
        ({"Return-Path": "<>"}, None, "empty Return-Path"),
        ({"Content-Type": "multipart/report; report-type=delivery-status"}, None, "delivery or read report"),
        ({}, "<>", "null envelope sender"),
        ({}, "", "null envelope sender"),
    ],
)
def test_machine_written_messages_are_recognised(
    headers: dict[str, str], envelope_from: str | None, reason: str
) -> None:
    assert auto_reply_reason(headers, envelope_from=envelope_from) == reason
    assert is_auto_reply(headers, envelope_from=envelope_from)


def test_human_messages_are_not_auto_replies() -> None:
    headers = [
        ("From", "Ann <ann@example.com>"),
        ("Auto-Submitted", "no"),
        ("Precedence", "first-class"),
        ("Return-Path", "<ann@example.com>"),
        ("List-Id", "<support.example.com>"),
        ("Content-Type", "multipart/alternative; boundary=x"),
    ]
    assert not is_auto_reply(headers, envelope_from="ann@example.com")


def test_html_to_text_drops_scripts_styles_and_shows_link_targets() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;<b>Ann</b>,</p><script>alert(1)</script><!-- hidden -->"
        "<ul><li>one</li><li>two</li></ul>"
        '<p><a href="https://evil.example/x">https://bank.example</a> &lt;script&gt;</p>'
        '<a href="javascript:alert(1)">click</a><pre>  keep\n  this</pre></body></html>'
    )
    assert html_to_text(html) == (
        "Hello Ann,\n\n- one\n- two\n\nhttps://bank.example (https://evil.example/x) <script>\nclick\nkeep\nthis"
    )


@given(st.text(max_size=300))
def test_html_to_text_never_raises(text: str) -> None:
    assert isinstance(html_to_text(f"<div>{text}<script>secret()</script></div>"), str)


# Text without "<" leaves the script a real element. (After a stray "<?" a browser, like this
# parser, ends a bogus comment at the next ">" and shows the script's body as text.)
@given(st.text(alphabet=st.characters(blacklist_characters="<"), max_size=300))
def test_html_to_text_never_keeps_a_script_element(text: str) -> None:
    out = html_to_text(f"<div>{text}<script>secret()</script></div>")
    assert "secret()" not in out or "secret()" in text


def test_authentication_results_come_only_from_the_trusted_mta() -> None:
    forged = "mx.example.com; spf=pass; dkim=pass; dmarc=pass"  # the sender's own, below ours
    ours = (
        "MX.example.com;\r\n spf=softfail (sender IP is 192.0.2.1) smtp.mailfrom=x.org;\r\n"
        " dkim=fail header.d=x.org; dkim=pass header.d=relay.org; dmarc=fail (p=reject) header.from=x.org"
    )
    other = "other.example.net; spf=pass"
    result = parse_authentication_results([other, ours, forged], "mx.example.com")
    assert result is not None
    assert (result.authserv_id, result.spf, result.dkim, result.dmarc) == ("mx.example.com", "softfail", "pass", "fail")
    assert parse_authentication_results([other], "mx.example.com") is None
    assert parse_authentication_results([ours], "") is None
