"""Help-desk email: one received message (`InboundEmail`) and one reply to send (`OutboundEmail`).

Decisions fixed here:

- Message ids are kept in their normalised form `<left@right>` (angle brackets, no whitespace,
  the right side lower-cased; `domain.email_threading.normalize_message_id` makes them). An id
  without `@` (a few old mailers write them) is kept as it came.
- Addresses are `local@domain` with the domain lower-cased and in IDNA (xn--) form; the local
  part keeps its case (RFC 5321 says only the receiving host may fold it). Display names never
  hold CR or LF, so nothing read here can inject a header into a reply.
- `text` is plain text only: the text/plain part when there is one, else the HTML part turned
  into text (tags dropped, scripts and styles removed, entities decoded). It may still contain
  characters such as `<` written by the sender: pages must escape it like any other user text.
- Attachment bytes are not in the model. `InboundEmail.raw` holds the message exactly as received
  (excluded from dumps and repr); an attachment names its MIME `part` ("2", "2.1", IMAP style) so
  `adapters.email_inbound.attachment_content(raw, part)` can return its bytes when the ticket
  service stores them.
- What is verified and what is not: the listener does not verify SPF, DKIM or DMARC itself. It
  copies the verdicts from the `Authentication-Results` header that the receiving MTA in front of
  it added (only the one with the configured authserv-id; a header the sender wrote is ignored),
  and flags `envelope_mismatch` when the envelope MAIL FROM differs from the header From. Both
  are signals for agents and rules, not proof of who wrote the message.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from schemas.common import AwareDatetime

MAX_ADDRESS = 254  # RFC 5321 path limit less the angle brackets
MAX_MESSAGE_ID = 998  # one header line
_LOCAL_CHARS = re.compile(r"^[^\s\x00-\x1f\x7f()<>\[\]:;@\\,\"]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MESSAGE_ID = re.compile(r"^<[^<>\s]+>$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"^[1-9][0-9]*(\.[1-9][0-9]*)*$")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")

AuthVerdict = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"]
TextSource = Literal["plain", "html", "none"]


def _address(value: str) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an email address")
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("expected an email address such as player@example.com")
    dots_ok = not (local.startswith(".") or local.endswith(".") or ".." in local)
    if len(local) > 64 or not _LOCAL_CHARS.match(local) or not dots_ok:
        raise ValueError("the local part of the address is not valid")
    try:
        ascii_domain = domain.rstrip(".").lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("the domain of the address is not valid") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or len(ascii_domain) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError("the domain of the address is not valid")
    if labels[-1].isdigit():
        raise ValueError("the domain of the address is not valid")
    address = f"{local}@{ascii_domain}"
    if len(address) > MAX_ADDRESS:
        raise ValueError("the address is too long")
    return address


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError("must be a single line")
    return value


EmailAddress = Annotated[str, AfterValidator(_address)]
MessageId = Annotated[str, Field(min_length=3, max_length=MAX_MESSAGE_ID, pattern=_MESSAGE_ID.pattern)]
OneLine = Annotated[str, AfterValidator(_one_line)]


def is_valid_address(value: str) -> bool:
    try:
        _address(value)
    except ValueError:
        return False
    return True


def normalize_address(value: str) -> str:
    """The canonical form of an address (domain lower-cased, IDNA); ValueError when it is not one."""
    return _address(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailAttachment(_Model):
    """One attachment of a received message; the bytes stay in `InboundEmail.raw` at `part`."""

    part: str = Field(pattern=_PART.pattern, max_length=64)
    filename: OneLine | None = Field(default=None, max_length=255)
    content_type: str = Field(pattern=_CONTENT_TYPE.pattern, max_length=255)
    size: StrictInt = Field(ge=0)
    sha256: str = Field(pattern=_SHA256.pattern)
    inline: bool = False


class AuthenticationResults(_Model):
    """Verdicts of the receiving MTA, copied from its trusted `Authentication-Results` header."""

    authserv_id: str = Field(min_length=1, max_length=255)
    spf: AuthVerdict | None = None
    dkim: AuthVerdict | None = None
    dmarc: AuthVerdict | None = None
    raw: str = Field(max_length=8192)


class InboundEmail(_Model):
    message_id: MessageId
    # True when the message had no usable Message-ID: the id is then derived from the message's
    # bytes (`<sha256@pitboss.invalid>`), so a retried delivery of the same bytes has the same id.
    message_id_synthesized: bool = False
    in_reply_to: list[MessageId] = Field(default_factory=list, max_length=64)
    references: list[MessageId] = Field(default_factory=list, max_length=1024)
    from_address: EmailAddress
    from_name: OneLine | None = Field(default=None, max_length=256)
    reply_to: list[EmailAddress] = Field(default_factory=list, max_length=64)
    to: list[EmailAddress] = Field(default_factory=list, max_length=1024)
    cc: list[EmailAddress] = Field(default_factory=list, max_length=1024)
    subject: OneLine = Field(default="", max_length=2000)
    text: str = ""
    text_source: TextSource = "none"
    attachments: list[EmailAttachment] = Field(default_factory=list, max_length=1000)
    date: AwareDatetime | None = None  # the sender's Date header: claimed, not trusted
    received_at: AwareDatetime
    # The SMTP envelope: "" is the null sender (<>) of bounces and auto-replies.
    envelope_from: str = Field(max_length=MAX_ADDRESS)
    envelope_to: list[EmailAddress] = Field(min_length=1, max_length=1024)
    envelope_mismatch: bool = False  # envelope MAIL FROM is not the header From (a signal, not a verdict)
    peer: str | None = Field(default=None, max_length=255)  # the connecting client's IP address
    auto_reply: bool = False
    auto_reply_reason: str | None = Field(default=None, max_length=255)
    authentication: AuthenticationResults | None = None
    size: StrictInt = Field(ge=0)
    sha256: str = Field(pattern=_SHA256.pattern)  # of `raw`
    raw: bytes = Field(default=b"", exclude=True, repr=False)


class OutboundAttachment(_Model):
    filename: OneLine = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", pattern=_CONTENT_TYPE.pattern, max_length=255)
    data: bytes = Field(repr=False)


class OutboundEmail(_Model):
    """One message to send; threading headers come from `domain.email_threading.reply_headers`."""

    message_id: MessageId
    from_address: EmailAddress
    from_name: OneLine | None = Field(default=None, max_length=256)
    to: list[EmailAddress] = Field(min_length=1, max_length=100)
    cc: list[EmailAddress] = Field(default_factory=list, max_length=100)
    reply_to: EmailAddress | None = None
    subject: OneLine = Field(max_length=998)
    text: str = Field(max_length=1_000_000)
    in_reply_to: MessageId | None = None
    references: list[MessageId] = Field(default_factory=list, max_length=64)
    # Set only for messages no human wrote (acknowledgements); replies of agents leave it False.
    auto_submitted: bool = False
    attachments: list[OutboundAttachment] = Field(default_factory=list, max_length=50)
