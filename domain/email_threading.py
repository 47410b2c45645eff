"""Help-desk email rules: threading headers, ticket tags, quoted-reply stripping, loop protection.

Pure: no IO, no clock, no randomness (the caller passes the UUID of a new Message-ID).

Message ids. `<left@right>`: whitespace and header folding inside or around the brackets are
dropped, the right side (a domain or a domain-like unique part) is lower-cased, the left side
keeps its case (RFC 5322 compares ids as exact strings; mail systems rewrite the case of the
domain often enough that folding it is safer than not). An id without `@` is kept as written.
A header may carry several ids and comments; everything outside `<...>` is ignored, except that
a header holding one bare token with `@` and no brackets (a broken mailer) counts as that id.

Threading. `thread_candidates` lists the ids a received message may answer, best first: the
In-Reply-To ids in order, then References newest first (References is oldest first). The ticket
service looks them up in that order and takes the first it knows; when none matches, the
`[#TAG]` in the subject (`ticket_reference`) is the fallback, and after that a new ticket.

Replies. `reply_headers` gives a new Message-ID, In-Reply-To (the newest message of the thread),
References (the thread's ids, oldest first, bounded: the first id and the newest `max - 1`, as
RFC 5322 3.6.4 and RFC 5537 3.4.4 suggest, so the root survives trimming), and the subject
`Re: [#TAG] <subject>` with reply prefixes and earlier tags removed, so the tag appears once.
Agents' replies are human: no Auto-Submitted header unless `auto=True` (acknowledgements).

Loop protection. `auto_reply_reason` says why a received message was written by a machine
(RFC 3834 Auto-Submitted, Precedence bulk/junk/list, X-Autoreply and kin, an empty Return-Path
or null envelope sender, a delivery or read report). The help desk never opens a ticket for
such a message and never answers it. List-Id alone is not enough: a support address fed through
a mailing-list group would otherwise drop every player's mail.

Authentication-Results. Only the header whose authserv-id is the one configured for the MTA in
front of the listener counts, and only the first (topmost) such header: that MTA prepends its own
and must remove or rename any incoming header that claims its id (RFC 8601 section 5); a header
written by the sender is ignored. Nothing is verified here: the verdicts are copied.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from html.parser import HTMLParser
from typing import Protocol, cast

from schemas.email import AuthenticationResults, AuthVerdict

MAX_MESSAGE_ID = 998
DEFAULT_MAX_REFERENCES = 20
# A ticket's short id as Pitboss writes it into subjects: `[#ABC123]`. Read case-insensitively
# (people retype subjects), returned upper-case.
TICKET_TAG = re.compile(r"\[#([A-Za-z0-9]{4,16})\]")

_FOLD = re.compile(r"\r?\n[ \t]+")
_BRACKETED = re.compile(r"<([^<>]*)>")
_WS = re.compile(r"\s+")
_DOMAIN = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


# --- Message ids --------------------------------------------------------------------------


def _normal_id(inner: str) -> str | None:
    inner = _WS.sub("", inner)
    if not inner or len(inner) + 2 > MAX_MESSAGE_ID:
        return None
    if any(ord(c) < 33 or ord(c) == 127 or c in "<>" for c in inner):
        return None
    left, at, right = inner.rpartition("@")
    if at:
        if not left or not right:
            return None
        return f"<{left}@{right.lower()}>"
    return f"<{inner}>"


def parse_message_ids(value: str | None) -> list[str]:
    """All ids of a Message-ID / In-Reply-To / References header value, normalised, in order, once each."""
    if not value:
        return []
    text = _FOLD.sub(" ", value)
    found = _BRACKETED.findall(text)
    if not found:
        token = text.strip()
        if token and "@" in token and not _WS.search(token):
            found = [token]
    ids: list[str] = []
    for raw in found:
        normal = _normal_id(raw)
        if normal is not None and normal not in ids:
            ids.append(normal)
    return ids


def normalize_message_id(value: str | None) -> str | None:
    """The first id of a header value, normalised; None when there is none."""
    ids = parse_message_ids(value)
    return ids[0] if ids else None


def new_message_id(domain: str, unique: uuid.UUID) -> str:
    """`<uuid@domain>` for a message Pitboss sends; the caller passes `uuid.uuid4()`."""
    domain = domain.strip().rstrip(".").lower()
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a domain name: {domain!r}")
    return f"<{unique}@{domain}>"


class ThreadHeaders(Protocol):
    @property
    def message_id(self) -> str: ...

    @property
    def in_reply_to(self) -> Sequence[str]: ...

    @property
    def references(self) -> Sequence[str]: ...


def thread_candidates(msg: ThreadHeaders) -> list[str]:
    """Ids the message may answer, best first: In-Reply-To in order, then References newest first."""
    own = normalize_message_id(msg.message_id)
    ordered = [*msg.in_reply_to, *reversed(list(msg.references))]
    out: list[str] = []
    for value in ordered:
        normal = normalize_message_id(value)
        if normal is not None and normal != own and normal not in out:
            out.append(normal)
    return out


def bound_references(ids: Sequence[str], max_ids: int = DEFAULT_MAX_REFERENCES) -> list[str]:
    """At most `max_ids` ids: the first (the thread's root) and the newest `max_ids - 1`, in order."""
    if max_ids < 2:
        raise ValueError("max_ids must keep at least the root and the parent")
    if len(ids) <= max_ids:
        return list(ids)
    return [ids[0], *ids[len(ids) - (max_ids - 1) :]]


# --- Subjects -----------------------------------------------------------------------------

# Reply and forward prefixes of common clients in English and German (and a few neighbours
# whose clients reach German and English desks), possibly numbered ("Re[2]:"), possibly repeated.
_PREFIX = re.compile(r"^\s*(?:(?:re|aw|antw|wg|fwd?|fw|sv|vs|tr|wtr)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)", re.IGNORECASE)


def ticket_reference(subject: str | None) -> str | None:
    """The ticket short id of the first `[#TAG]` in a subject, upper-cased; None without one."""
    if not subject:
        return None
    match = TICKET_TAG.search(_FOLD.sub(" ", subject))
    return match.group(1).upper() if match else None


def base_subject(subject: str | None) -> str:
    """The subject without reply/forward prefixes and ticket tags, whitespace collapsed."""
    text = _WS.sub(" ", _FOLD.sub(" ", subject or "")).strip()
    while True:
        stripped = TICKET_TAG.sub("", _PREFIX.sub("", text, count=1), count=0).strip()
        stripped = _WS.sub(" ", stripped)
        if stripped == text:
            return text
        text = stripped


class TicketLike(Protocol):
    @property
    def short_id(self) -> str: ...

    @property
    def subject(self) -> str: ...


def reply_subject(short_id: str, subject: str | None) -> str:
    if not TICKET_TAG.fullmatch(f"[#{short_id}]"):
        raise ValueError(f"not a ticket short id: {short_id!r}")
    base = base_subject(subject)[:900] or "(no subject)"
    return f"Re: [#{short_id.upper()}] {base}"


def reply_headers(
    ticket: TicketLike,
    our_message_id: str,
    parent_message_ids: Sequence[str],
    *,
    max_references: int = DEFAULT_MAX_REFERENCES,
    auto: bool = False,
) -> dict[str, str]:
    """Headers of a reply on a ticket.

    `parent_message_ids` are the ids of the thread the reply answers, oldest first (typically the
    References of the message answered followed by its Message-ID); the last one is the parent.
    """
    own = normalize_message_id(our_message_id)
    if own is None:
        raise ValueError("our_message_id is not a message id")
    parents: list[str] = []
    for value in parent_message_ids:
        normal = normalize_message_id(value)
        if normal is None or normal == own:
            continue
        if normal in parents:  # keep the newest position, so the parent stays last
            parents.remove(normal)
        parents.append(normal)
    headers = {"Message-ID": own, "Subject": reply_subject(ticket.short_id, ticket.subject)}
    if parents:
        headers["In-Reply-To"] = parents[-1]
        headers["References"] = " ".join(bound_references(parents, max_references))
    if auto:
        headers["Auto-Submitted"] = "auto-replied"
    return headers


# --- Quoted replies -----------------------------------------------------------------------

_ATTRIBUTION = (
    re.compile(r"^on\s.{1,400}\swrote\s*:$", re.IGNORECASE),  # On Mon, 1 Jan 2024, Ann <a@x> wrote:
    re.compile(r"^am\s.{1,400}\sschrieb\b.{0,400}:$", re.IGNORECASE),  # Am 01.01.2024 um 10:00 schrieb Max <m@x>:
    re.compile(r"^.{1,200}\sschrieb\sam\s.{1,200}:$", re.IGNORECASE),  # Max Muster schrieb am 01.01.2024:
)
_SEPARATOR = re.compile(
    r"^-{2,}\s*(?:original message|ursprüngliche nachricht|original-nachricht|originalnachricht)\s*-{2,}$",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"^\*?(?:from|von)\s*:\*?\s*\S", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\*?(?:sent|date|gesendet|datum)\s*:\*?\s*\S", re.IGNORECASE)
_RULE = re.compile(r"^_{10,}$")


def _cut_at(lines: list[str]) -> int | None:
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if _SEPARATOR.match(line):
            return i
        # Clients wrap a long attribution line: try it joined with the next one or two lines.
        if line[:3].lower() in ("on ", "am ") or " schrieb " in line.lower():
            joined = line
            for extra in range(3):
                if extra and i + extra < len(lines):
                    joined = f"{joined} {lines[i + extra].strip()}"
                elif extra:
                    break
                if any(p.match(joined) for p in _ATTRIBUTION):
                    return i
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if _OUTLOOK_FROM.match(line) and _OUTLOOK_NEXT.match(nxt):
            return i - 1 if i > 0 and _RULE.match(lines[i - 1].strip()) else i
        if _RULE.match(line) and _OUTLOOK_FROM.match(nxt):
            return i
    return None


def strip_quoted_reply(text: str) -> str:
    """The new part of a reply: the quoted tail is dropped (attribution line, client separators,
    trailing `>` lines). Quotes interleaved with answers are kept, since they give the answers
    their context. When nothing would remain, the whole text is returned: never lose a message."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _cut_at(lines)
    if cut is not None:
        lines = lines[:cut]
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith(">")):
        lines.pop()
    kept = "\n".join(line.rstrip() for line in lines).strip("\n")
    return kept if kept.strip() else text.strip()


# --- Loop protection ----------------------------------------------------------------------

_BULK = {"bulk", "junk", "list", "auto_reply"}
_AUTO_FLAGS = ("x-autoreply", "x-autorespond", "x-auto-reply", "x-autogenerated", "x-mail-autoreply")


def _header_map(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.strip().lower(), []).append(_FOLD.sub(" ", str(value)).strip())
    return out


def auto_reply_reason(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], *, envelope_from: str | None = None
) -> str | None:
    """Why a message was written by a machine (never open a ticket for it nor answer it); None if not."""
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return "null envelope sender"
    h = _header_map(headers)
    for value in h.get("return-path", []):
        if value.replace(" ", "") in ("", "<>"):
            return "empty Return-Path"
    for value in h.get("auto-submitted", []):
        token = value.split(";", 1)[0].split("(", 1)[0].strip().lower()
        if token and token != "no":
            return f"Auto-Submitted: {token}"
    for name in ("precedence", "x-precedence"):
        for value in h.get(name, []):
            if value.strip().lower() in _BULK:
                return f"Precedence: {value.strip().lower()}"
    for name in _AUTO_FLAGS:
        for value in h.get(name, []):
            if value.strip().lower() not in ("no", "false", "0"):
                return f"{name} header"
    for value in h.get("content-type", []):
        if value.lower().startswith("multipart/report"):
            return "delivery or read report"
    return None


def is_auto_reply(headers: Mapping[str, str] | Iterable[tuple[str, str]], *, envelope_from: str | None = None) -> bool:
    return auto_reply_reason(headers, envelope_from=envelope_from) is not None


# --- HTML to text -------------------------------------------------------------------------

_SKIP = {"script", "style", "head", "title", "noscript", "template", "iframe", "object", "svg", "math"}
_BLOCK = {
    "p", "div", "br", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
    "pre", "hr", "section", "article", "header", "footer", "address", "dl", "dt", "dd", "form",
}  # fmt: skip


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        if tag == "pre":
            self.pre += 1
        if tag == "a":
            href = dict(attrs).get("href") or None
            self.href.append(href if href and href.lower().startswith(("http://", "https://")) else None)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag == "a" and self.href:
            href = self.href.pop()
            # Show where a link really goes: a phishing link's text and target differ.
            if href and not self.skip and href not in "".join(self.parts[-3:]):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.parts.append(data if self.pre else _WS.sub(" ", data))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body: tags, scripts, styles and comments dropped, entities decoded."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = _CONTROL.sub("", "".join(parser.parts).replace("\xa0", " "))
    lines = [line.strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# --- Authentication-Results ---------------------------------------------------------------

_COMMENT = re.compile(r"\([^()]*\)")
_METHOD = re.compile(r"(?:^|[;\s])(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)
_VERDICTS: set[str] = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}


def _pick(verdicts: dict[str, list[str]], method: str) -> AuthVerdict | None:
    found = verdicts.get(method)
    if not found:
        return None
    # Several DKIM signatures: one that verifies is enough to say the body was signed.
    return cast(AuthVerdict, "pass" if "pass" in found else found[0])


def parse_authentication_results(values: Sequence[str], authserv_id: str) -> AuthenticationResults | None:
    """The verdicts of the first (topmost) Authentication-Results header with the trusted authserv-id."""
    trusted = authserv_id.strip().lower()
    if not trusted:
        return None
    for value in values:
        text = _COMMENT.sub(" ", _FOLD.sub(" ", value))
        head, _, rest = text.partition(";")
        tokens = head.split()
        if not tokens or tokens[0].lower() != trusted:
            continue
        verdicts: dict[str, list[str]] = {}
        for method, result in _METHOD.findall(";" + rest):
            if result.lower() in _VERDICTS:
                verdicts.setdefault(method.lower(), []).append(result.lower())
        return AuthenticationResults(
            authserv_id=tokens[0].lower(),
            spf=_pick(verdicts, "spf"),
            dkim=_pick(verdicts, "dkim"),
            dmarc=_pick(verdicts, "dmarc"),
            raw=value[:8192],
        )
    return None
