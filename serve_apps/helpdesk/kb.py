"""The knowledge base and reply templates as a service, one per Serve replica (help desk API
and dashboard alike): editing with version history, the search index, ticket suggestions.

The index: each replica builds, per brand, a `KbIndex` from Cassandra at start (the build runs in
the background; a search before it finishes waits up to `_READY_SECONDS`, then 503) and keeps it
current. A replica that changes an article indexes it at once and announces it on the Redis
channel `pitboss:kb:changes`; the others re-read the article when they hear it, and every
`kb_poll_seconds` each replica also reads the change log (`kb_changes`) in case an announcement
was lost (Redis pub/sub is at most once), so two replicas agree within seconds.

What is indexed: the published version of an article under its id (status "published": the
public FAQ and every agent see it), and, when the article has unpublished changes, its newest
draft under a derived id (status "draft": only kb.write holders search drafts). A hit on a
draft id is reported under the article's id, the better of the two hits kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID, uuid4, uuid5

from fastapi import Depends
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from adapters.cassandra.kb import ArticleRow, KbStore, TemplateStore, TicketScan, VersionRow
from adapters.cassandra.tickets import TicketStore
from adapters.redis_pool import redis_client
from domain.errors import Conflict, Forbidden, RateLimited, Unavailable
from domain.kb_search import KbIndex
from schemas.common import AwareDatetime, Brand
from schemas.kb import BODY_MAX, ArticleDoc, ArticleStatus, Category, Language, SearchHit, SearchQuery, Tag, Title
from serve_apps.backoffice.deps import BO, Operator
from serve_apps.backoffice.runtime import BackOffice

log = logging.getLogger("pitboss.kb")
CHANNEL = "pitboss:kb:changes"
_DRAFTS = UUID("0b7e7f55-3b9f-4c57-a1a4-7a7c2f3f9d21")  # namespace of the draft documents' ids
_READY_SECONDS = 30.0
_POLL_MARGIN = timedelta(seconds=30)  # re-read changes this far back: writers' clocks and commit delays


def draft_id(article_id: UUID) -> UUID:
    return uuid5(_DRAFTS, str(article_id))


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


Slug = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=120, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
Tags = Annotated[list[Tag], Field(max_length=50)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArticleCreate(_In):
    article_id: UUID | None = None  # the caller's idempotency key; generated when left out
    brand: Brand
    language: Language
    category: Category
    title: Title
    body: str = Field(default="", max_length=BODY_MAX)
    tags: Tags = Field(default_factory=list)
    slug: Slug | None = None  # derived from the title when left out


class ArticleUpdate(_In):
    """A new draft version. Fields left out are unchanged; `version` is the version the editor
    showed: an article changed since is refused (409) rather than overwritten."""

    version: Annotated[StrictInt, Field(ge=1)]
    language: Language | None = None
    category: Category | None = None
    title: Title | None = None
    body: str | None = Field(default=None, max_length=BODY_MAX)
    tags: Tags | None = None
    slug: Slug | None = None


class ArticlePublish(_In):
    version: Annotated[StrictInt, Field(ge=1)] | None = None  # publish only if this is still the newest


class ArticleOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: UUID
    brand: str
    language: str
    category: str
    slug: str
    title: str
    body: str
    tags: list[str]
    status: str  # "published" (a version is public) or "draft" (nothing public)
    version: int
    published_version: int | None
    has_unpublished_changes: bool
    created_at: AwareDatetime
    created_by: str
    updated_at: AwareDatetime
    updated_by: str
    published_at: AwareDatetime | None


class VersionOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: UUID
    version: int
    language: str
    category: str
    slug: str
    title: str
    body: str
    tags: list[str]
    author: str
    created_at: AwareDatetime
    published: bool  # the version the public sees now


class FaqArticle(BaseModel):
    """What the public sees: no ids of operators, no versions, no drafts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str
    language: str
    category: str
    title: str
    body_html: str
    tags: list[str]
    published_at: AwareDatetime | None


class FaqHit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str
    title: str
    snippet: str  # HTML: escaped text with <mark> around the matched words
    language: str
    category: str
    score: float


def article_out(a: ArticleRow) -> ArticleOut:
    return ArticleOut(
        article_id=a.article_id, brand=a.brand, language=a.language, category=a.category, slug=a.slug,
        title=a.title, body=a.body, tags=list(a.tags), status=a.status, version=a.version,
        published_version=a.published_version, has_unpublished_changes=a.has_unpublished_changes,
        created_at=a.created_at, created_by=a.created_by, updated_at=a.updated_at, updated_by=a.updated_by,
        published_at=a.published_at,
    )


def version_out(v: VersionRow, published: int | None) -> VersionOut:
    return VersionOut(article_id=v.article_id, version=v.version, language=v.language, category=v.category,
                      slug=v.slug, title=v.title, body=v.body, tags=list(v.tags), author=v.author,
                      created_at=v.created_at, published=v.version == published)


def slugify(title: str) -> str:
    """"Bónus & Wagering: FAQ" -> "bonus-wagering-faq" (ASCII letters and digits, 120 at most)."""
    ascii_ = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    slug = "-".join(re.findall(r"[a-z0-9]+", ascii_))[:120].strip("-")
    return slug or "article"


# ----------------------------------------------------------------------------- Markdown, safely

_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>[^*\n]+)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\n]+)\*(?!\w)"
    r"|\[(?P<text>[^\]\n]+)\]\((?P<href>[^)\s]+)\)"
)
_SAFE_HREF = re.compile(r"^(https?://[^\s\"'<>]+|/[^\s\"'<>]*|mailto:[^\s\"'<>@]+@[^\s\"'<>]+)$", re.I)


def _inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        if m.group("code") is not None:
            out.append(f"<code>{html.escape(m.group('code'))}</code>")
        elif m.group("bold") is not None:
            out.append(f"<strong>{html.escape(m.group('bold'))}</strong>")
        elif m.group("em") is not None:
            out.append(f"<em>{html.escape(m.group('em'))}</em>")
        else:
            label, href = m.group("text"), m.group("href")
            if _SAFE_HREF.match(href):
                out.append(f'<a href="{html.escape(href, quote=True)}" rel="nofollow noopener noreferrer">'
                           f"{html.escape(label)}</a>")
            else:  # javascript:, data: and the like are shown as text, never linked
                out.append(html.escape(m.group(0)))
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def render_markdown(text: str) -> str:
    """A small safe subset of Markdown as HTML: headings (#..###), paragraphs, bullet and numbered
    lists, **bold**, *emphasis*, `code`, and links to http(s), mailto and site paths. Everything
    else is escaped text: raw HTML in an article is shown, never injected."""
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []
    kind = ""

    def flush() -> None:
        nonlocal kind
        if para:
            blocks.append("<p>" + "<br>".join(_inline(line) for line in para) + "</p>")
            para.clear()
        if items:
            blocks.append(f"<{kind}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{kind}>")
            items.clear()
        kind = ""

    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        bullet = re.match(r"^[-*+]\s+(.*)$", line)
        number = re.match(r"^\d{1,9}[.)]\s+(.*)$", line)
        if not line:
            flush()
        elif heading:
            flush()
            level = min(len(heading.group(1)) + 1, 6)  # the page's title is the h1
            blocks.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet or number:
            want = "ul" if bullet else "ol"
            if para or (items and kind != want):
                flush()
            kind = want
            items.append((bullet or number).group(1))  # type: ignore[union-attr]
        else:
            if items:
                flush()
            para.append(line)
    flush()
    return "\n".join(blocks)


# ----------------------------------------------------------------------------- the service


class KbService:
    def __init__(self, bo: BackOffice) -> None:
        self.bo = bo
        self.settings = bo.settings
        self.indexes: dict[str, KbIndex] = {}
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[tuple[datetime, UUID], None] = {}
        self._draft_of: dict[UUID, UUID] = {}  # draft document id -> article id
        self._slugs: dict[UUID, str] = {}  # article id -> its slug (the FAQ's address)
        self.built_in_seconds: float | None = None
        self.store: KbStore
        self.templates: TemplateStore
        self.tickets: TicketStore
        self.scan: TicketScan

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        session = self.bo.session
        # The constructors block on their prepares.
        self.store, self.templates, self.tickets, self.scan = await asyncio.gather(
            loop.run_in_executor(None, KbStore, session),
            loop.run_in_executor(None, TemplateStore, session),
            loop.run_in_executor(None, TicketStore, session),
            loop.run_in_executor(None, TicketScan, session),
        )
        self._tasks = [asyncio.create_task(self._build()), asyncio.create_task(self._listen()),
                       asyncio.create_task(self._poll())]

    async def ready(self) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), _READY_SECONDS)
        except TimeoutError as exc:
            raise Unavailable("the knowledge-base index is still being built; retry shortly") from exc

    # -- index maintenance

    async def _build(self) -> None:
        started = time.perf_counter()
        self._mark = datetime.now(UTC)
        while True:
            try:
                for brand, language in await self.store.partitions():
                    ids = await self.store.all_ids(brand, language)
                    for i in range(0, len(ids), 64):
                        rows = await asyncio.gather(*(self.store.find(a) for a in ids[i:i + 64]))
                        for row in rows:
                            if row is not None and row.language == language:
                                await self._index(row)
                break
            except Exception:  # Cassandra not reachable yet: the replica keeps trying
                log.exception("kb index build failed; retrying")
                await asyncio.sleep(2)
        self.built_in_seconds = time.perf_counter() - started
        self._ready.set()
        log.info("kb index built: %d documents in %.1fs", sum(len(i) for i in self.indexes.values()),
                 self.built_in_seconds)

    async def _listen(self) -> None:
        while True:
            client = redis_client(self.settings, socket_timeout=None)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            await self._ready.wait()
                            await self.refresh(UUID(json.loads(message["data"])["article_id"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("kb change channel lost; resubscribing", exc_info=True)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    async def _poll(self) -> None:
        await self._ready.wait()
        while True:
            await asyncio.sleep(self.settings.kb_poll_seconds)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("kb change poll failed", exc_info=True)

    async def poll_once(self) -> int:
        """Re-read the articles in the change log not seen yet; how many were re-read."""
        now = datetime.now(UTC)
        since = min(self._mark, now) - _POLL_MARGIN
        changes = await self.store.changes_since(since, now)
        fresh = [c for c in changes if c not in self._seen]
        for c in fresh:
            self._seen[c] = None
        for key in [k for k in self._seen if k[0] < since]:
            del self._seen[key]
        for article_id in dict.fromkeys(a for _, a in fresh):
            await self.refresh(article_id)
        self._mark = now
        return len(fresh)

    async def refresh(self, article_id: UUID) -> None:
        row = await self.store.find(article_id)
        if row is not None:
            await self._index(row)

    def _doc(self, row: ArticleRow | VersionRow, article_id: UUID, version: int, status: ArticleStatus,
             at: datetime) -> ArticleDoc:
        return ArticleDoc(article_id=article_id, version=version, language=row.language, category=row.category,
                          title=row.title, body=row.body, tags=list(row.tags), status=status,
                          updated_at=at)

    async def _index(self, row: ArticleRow) -> None:
        index = self.indexes.setdefault(row.brand, KbIndex())
        self._slugs[row.article_id] = row.slug
        pv = row.published_version
        if pv is None:
            index.remove(row.article_id)
        elif index.version_of(row.article_id) != pv:  # a version's content never changes
            source: ArticleRow | VersionRow = row if pv == row.version else await self.store.version(row.article_id,
                                                                                                      pv)
            index.upsert(self._doc(source, row.article_id, pv, "published", row.published_at or row.updated_at))
        if row.has_unpublished_changes:
            self._draft_of[draft_id(row.article_id)] = row.article_id
            index.upsert(self._doc(row, draft_id(row.article_id), row.version, "draft", row.updated_at))
        else:
            index.remove(draft_id(row.article_id))

    async def _changed(self, row: ArticleRow) -> None:
        await self._index(row)
        self._seen[(row.updated_at, row.article_id)] = None
        try:
            await self.bo.redis.publish(CHANNEL, json.dumps({"article_id": str(row.article_id), "brand": row.brand}))
        except Exception:  # the others will find it in the change log
            log.warning("kb change announcement failed", exc_info=True)

    def slug_of(self, article_id: UUID) -> str:
        return self._slugs.get(article_id, "")

    # -- articles

    async def create(self, body: ArticleCreate, actor: str, now: datetime) -> tuple[ArticleRow, bool]:
        now = _ms(now)
        row = ArticleRow(
            article_id=body.article_id or uuid4(), brand=body.brand, language=body.language, category=body.category,
            slug=body.slug or slugify(body.title), title=body.title, body=body.body, tags=tuple(_unique(body.tags)),
            version=1, published_version=None, created_at=now, created_by=actor, updated_at=now, updated_by=actor,
            published_at=None,
        )
        stored, created = await self.store.create(row)
        if created:
            await self._changed(stored)
        return stored, created

    async def update(self, article_id: UUID, body: ArticleUpdate, actor: str, now: datetime) -> ArticleRow:
        before = await self.store.get(article_id)
        _expect(before, body.version)
        changes = body.model_dump(exclude_unset=True, exclude={"version"})
        if "tags" in changes:
            changes["tags"] = tuple(_unique(changes["tags"] or []))
        changes = {k: v for k, v in changes.items() if v is not None}
        if all(getattr(before, k) == v for k, v in changes.items()):
            return before  # nothing changed: no new version
        if "slug" in changes and changes["slug"] != before.slug:
            await self.store.claim_slug(before.brand, changes["slug"], article_id)
        after = replace(before, **changes, version=before.version + 1, updated_at=_ms(now), updated_by=actor)
        await self.store.update(before, after)
        if after.slug != before.slug:
            await self.store.release_slug(before.brand, before.slug, article_id)
        await self._changed(after)
        return after

    async def publish(self, article_id: UUID, version: int | None, actor: str, now: datetime) -> ArticleRow:
        before = await self.store.get(article_id)
        _expect(before, version)
        if before.published_version == before.version:
            return before
        after = replace(before, published_version=before.version, published_at=_ms(now), updated_at=_ms(now),
                        updated_by=actor)
        await self.store.update(before, after)
        await self._changed(after)
        return after

    async def unpublish(self, article_id: UUID, version: int | None, actor: str, now: datetime) -> ArticleRow:
        before = await self.store.get(article_id)
        _expect(before, version)
        if before.published_version is None:
            return before
        after = replace(before, published_version=None, published_at=None, updated_at=_ms(now), updated_by=actor)
        await self.store.update(before, after)
        await self._changed(after)
        return after

    # -- search

    async def search(self, brands: Iterable[str], q: str, *, language: str | None = None,
                     category: str | None = None, drafts: bool = False, limit: int = 10, offset: int = 0,
                     prefix: bool = False) -> list[SearchHit]:
        await self.ready()
        query = SearchQuery(q=q, language=language, category=category, audience="agent" if drafts else "public",
                            limit=min(limit * 2 if drafts else limit, 50), offset=offset, prefix=prefix)
        hits: list[SearchHit] = []
        for brand in brands:
            index = self.indexes.get(brand)
            if index is not None:
                hits += index.search(query)
        hits.sort(key=lambda h: -h.score)
        out: dict[UUID, SearchHit] = {}
        for h in hits:  # a draft document's hit is reported under its article, the better hit kept
            article = self._draft_of.get(h.article_id, h.article_id)
            if article not in out:
                out[article] = h if article == h.article_id else h.model_copy(update={"article_id": article})
        return list(out.values())[:limit]

    async def suggest(self, brand: str, text: str, language: str | None, limit: int = 5) -> list[SearchHit]:
        await self.ready()
        index = self.indexes.get(brand)
        if index is None:
            return []
        hits = index.suggest(text, language, limit)
        if not hits and language is not None:  # no article in the ticket's language: any language
            hits = index.suggest(text, None, limit)
        return hits

    async def rate_limit(self, client: str | None) -> None:
        """The public FAQ's fixed one-minute window per client address (429 beyond it)."""
        window = int(time.time() // 60)
        key = f"pitboss:faq:rl:{client or 'unknown'}:{window}"
        try:
            count = int(await self.bo.redis.incr(key))
            if count == 1:
                await self.bo.redis.expire(key, 120)
        except Exception:  # Redis down: the FAQ stays up, unlimited, rather than failing closed
            log.warning("faq rate limiter unavailable", exc_info=True)
            return
        if count > self.settings.faq_rate_per_minute:
            raise RateLimited("too many requests from this address; retry in a minute",
                              extra={"retry_after": 60 - int(time.time()) % 60})


def _ms(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _expect(row: ArticleRow, version: int | None) -> None:
    if version is not None and version != row.version:
        raise Conflict(f"article {row.article_id} is at version {row.version}, not {version}: reload it",
                       field="version")


def scope_brands(op: Operator, known: Iterable[str], brand: str | None) -> list[str]:
    """The brands an agent's search covers: the one asked for (in the agent's scope) or all in scope."""
    allowed = op.subject.brands
    if brand is not None:
        if "*" not in allowed and brand not in allowed:
            raise Forbidden(f"brand {brand} is outside your scope", field="brand")
        return [brand]
    return sorted(b for b in known if "*" in allowed or b in allowed)


def primary_language(tag: str | None) -> str | None:
    """"en-GB" -> "en" (the index's partitions are primary subtags)."""
    if not tag:
        return None
    head = tag.split("-", 1)[0].strip().lower()
    return head if re.fullmatch(r"[a-z]{2,3}", head) else None


_services: dict[int, KbService] = {}
_starting: dict[int, asyncio.Task[KbService]] = {}


async def _start(bo: BackOffice) -> KbService:
    service = KbService(bo)
    await service.start()
    _services[id(bo)] = service
    return service


async def kb_for(bo: BackOffice) -> KbService:
    """The replica's service (started on first use; the index builds in the background)."""
    service = _services.get(id(bo))
    if service is not None:
        return service
    task = _starting.get(id(bo))
    if task is None:
        task = _starting[id(bo)] = asyncio.create_task(_start(bo))
    try:
        return await asyncio.shield(task)
    except Exception as exc:
        _starting.pop(id(bo), None)
        raise Unavailable("the knowledge base cannot reach its storage") from exc


async def kb_service(bo: BO) -> KbService:
    return await kb_for(bo)


KB = Annotated[KbService, Depends(kb_service)]


__all__ = ["KB", "ArticleCreate", "ArticleOut", "ArticlePublish", "ArticleUpdate", "FaqArticle", "FaqHit",
           "KbService", "VersionOut", "article_out", "draft_id", "kb_for", "render_markdown", "slugify",
           "version_out"]
