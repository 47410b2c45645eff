"""Knowledge-base articles and reply templates in Cassandra (tables in schemas/cql/012_helpdesk_kb.cql).

The `kb_articles` row is the commit point: created `IF NOT EXISTS`, changed only by
`UPDATE ... IF version = ?` (Conflict, field "version", when another editor got there first). It
always holds the newest content, so the history is complete when every update first makes sure
the version it replaces is in `kb_article_versions` (an idempotent insert of the same content):
a crash after a commit loses no version, and a losing editor writes no history row.
Index rows (brand listing, partitions, change log) are written after the commit; readers trust
the article row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, applied, utc
from adapters.cassandra.tickets import _TICKET_COLUMNS as TICKET_COLUMNS
from adapters.cassandra.tickets import _ticket as ticket_of_row
from domain.errors import Conflict, InvalidInput, NotFound
from domain.tickets import Ticket

_CONCURRENCY = 32
_ARTICLE = (
    "article_id, brand, language, category, slug, title, body, tags, version, published_version, created_at, "
    "created_by, updated_at, updated_by, published_at"
)
_VERSION = "article_id, version, language, category, slug, title, body, tags, author, created_at"
_TEMPLATE = (
    "template_id, language, name, body, set_status, add_tags, version, deleted, created_at, updated_at, updated_by"
)
PARTITION_SCOPE = "all"


@dataclass(frozen=True, slots=True)
class ArticleRow:
    article_id: UUID
    brand: str
    language: str
    category: str
    slug: str
    title: str
    body: str
    tags: tuple[str, ...]
    version: int
    published_version: int | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    published_at: datetime | None

    @property
    def status(self) -> str:
        return "published" if self.published_version is not None else "draft"

    @property
    def has_unpublished_changes(self) -> bool:
        return self.published_version != self.version

    def content(self) -> tuple[str, str, str, str, str, tuple[str, ...]]:
        return (self.language, self.category, self.slug, self.title, self.body, self.tags)


@dataclass(frozen=True, slots=True)
class VersionRow:
    article_id: UUID
    version: int
    language: str
    category: str
    slug: str
    title: str
    body: str
    tags: tuple[str, ...]
    author: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TemplateRow:
    template_id: UUID
    language: str
    name: str
    body: str
    set_status: str | None
    add_tags: tuple[str, ...]
    version: int
    deleted: bool
    created_at: datetime
    updated_at: datetime
    updated_by: str


def version_of(a: ArticleRow) -> VersionRow:
    """The history row of an article's current content."""
    return VersionRow(a.article_id, a.version, a.language, a.category, a.slug, a.title, a.body, a.tags,
                      a.updated_by, a.updated_at)


def _article(r: dict[str, Any]) -> ArticleRow:
    return ArticleRow(
        article_id=r["article_id"], brand=r["brand"], language=r["language"], category=r["category"],
        slug=r["slug"], title=r["title"], body=r["body"] or "", tags=tuple(r["tags"] or ()), version=r["version"],
        published_version=r["published_version"], created_at=utc(r["created_at"]) or datetime.now(UTC),
        created_by=r["created_by"] or "", updated_at=utc(r["updated_at"]) or datetime.now(UTC),
        updated_by=r["updated_by"] or "", published_at=utc(r["published_at"]),
    )


def _version(r: dict[str, Any]) -> VersionRow:
    return VersionRow(
        article_id=r["article_id"], version=r["version"], language=r["language"], category=r["category"],
        slug=r["slug"], title=r["title"], body=r["body"] or "", tags=tuple(r["tags"] or ()), author=r["author"] or "",
        created_at=utc(r["created_at"]) or datetime.now(UTC),
    )


def _template(r: dict[str, Any]) -> TemplateRow:
    return TemplateRow(
        template_id=r["template_id"], language=r["language"], name=r["name"], body=r["body"] or "",
        set_status=r["set_status"], add_tags=tuple(r["add_tags"] or ()), version=r["version"],
        deleted=bool(r["deleted"]), created_at=utc(r["created_at"]) or datetime.now(UTC),
        updated_at=utc(r["updated_at"]) or datetime.now(UTC), updated_by=r["updated_by"] or "",
    )


class KbStore:
    """Statements prepared once (the constructor blocks on the prepares: build it off the event loop)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._create = p(f"INSERT INTO kb_articles ({_ARTICLE}) VALUES ({', '.join('?' * 15)}) IF NOT EXISTS")
        self._get = p(f"SELECT {_ARTICLE} FROM kb_articles WHERE article_id = ?")
        self._update = p(
            "UPDATE kb_articles SET brand = ?, language = ?, category = ?, slug = ?, title = ?, body = ?, tags = ?, "
            "version = ?, published_version = ?, updated_at = ?, updated_by = ?, published_at = ? "
            "WHERE article_id = ? IF version = ?"
        )
        self._put_version = p(f"INSERT INTO kb_article_versions ({_VERSION}) VALUES ({', '.join('?' * 10)}) "
                              "IF NOT EXISTS")
        self._versions = p(f"SELECT {_VERSION} FROM kb_article_versions WHERE article_id = ? LIMIT ?")
        self._versions_before = p(f"SELECT {_VERSION} FROM kb_article_versions WHERE article_id = ? AND version < ? "
                                  "LIMIT ?")
        self._version = p(f"SELECT {_VERSION} FROM kb_article_versions WHERE article_id = ? AND version = ?")
        self._list_put = p(
            "INSERT INTO kb_articles_by_brand (brand, language, article_id, title, slug, category, version, "
            "published_version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._list_del = p("DELETE FROM kb_articles_by_brand WHERE brand = ? AND language = ? AND article_id = ?")
        self._list_first = p(
            "SELECT article_id, title, slug, category, version, published_version, updated_at "
            "FROM kb_articles_by_brand WHERE brand = ? AND language = ? LIMIT ?"
        )
        self._list_after = p(
            "SELECT article_id, title, slug, category, version, published_version, updated_at "
            "FROM kb_articles_by_brand WHERE brand = ? AND language = ? AND article_id > ? LIMIT ?"
        )
        self._part_put = p("INSERT INTO kb_partitions (scope, brand, language) VALUES (?, ?, ?)")
        self._parts = p("SELECT brand, language FROM kb_partitions WHERE scope = ?")
        self._slug_claim = p("INSERT INTO kb_slugs (brand, slug, article_id) VALUES (?, ?, ?) IF NOT EXISTS")
        self._slug_get = p("SELECT article_id FROM kb_slugs WHERE brand = ? AND slug = ?")
        self._slug_release = p("DELETE FROM kb_slugs WHERE brand = ? AND slug = ? IF article_id = ?")
        self._change = p("INSERT INTO kb_changes (day, changed_at, article_id) VALUES (?, ?, ?)")
        self._changes = p("SELECT changed_at, article_id FROM kb_changes WHERE day = ? AND changed_at >= ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"kb_{op}", limit=self._limit)

    # ------------------------------------------------------------------------ articles

    async def claim_slug(self, brand: str, slug: str, article_id: UUID) -> None:
        """Conflict (field "slug") when another article of the brand holds it."""
        rows = await self._run(self._slug_claim, (brand, slug, article_id), "slug")
        if not applied(rows) and rows and rows[0].get("article_id") != article_id:
            raise Conflict(f"the slug {slug!r} is taken by another article of {brand}", field="slug")

    async def release_slug(self, brand: str, slug: str, article_id: UUID) -> None:
        await self._run(self._slug_release, (brand, slug, article_id), "slug")

    async def by_slug(self, brand: str, slug: str) -> UUID | None:
        rows = await self._run(self._slug_get, (brand, slug), "slug")
        return rows[0]["article_id"] if rows else None

    async def create(self, a: ArticleRow) -> tuple[ArticleRow, bool]:
        """Store a new article (version 1). A retry with the same id returns the stored one, False."""
        existing = await self.find(a.article_id)
        if existing is not None:  # a retry: its slug was claimed the first time
            return existing, False
        await self.claim_slug(a.brand, a.slug, a.article_id)
        rows = await self._run(self._create, (
            a.article_id, a.brand, a.language, a.category, a.slug, a.title, a.body, list(a.tags), a.version,
            a.published_version, a.created_at, a.created_by, a.updated_at, a.updated_by, a.published_at,
        ), "create")
        if not applied(rows):  # a concurrent retry won: keep its slug, drop ours if it differs
            stored = await self.get(a.article_id)
            if (stored.brand, stored.slug) != (a.brand, a.slug):
                await self.release_slug(a.brand, a.slug, a.article_id)
            return stored, False
        await self._put_history(version_of(a))
        await self._after(None, a)
        return a, True

    async def get(self, article_id: UUID) -> ArticleRow:
        rows = await self._run(self._get, (article_id,), "get")
        if not rows:
            raise NotFound(f"no article {article_id}", field="article_id")
        return _article(rows[0])

    async def find(self, article_id: UUID) -> ArticleRow | None:
        rows = await self._run(self._get, (article_id,), "get")
        return _article(rows[0]) if rows else None

    async def update(self, before: ArticleRow, after: ArticleRow) -> None:
        """Commit `after` over `before` (Conflict when `before` is stale). A new content version
        (after.version > before.version) gets its history row; the one it replaces is kept first."""
        await self._put_history(version_of(before))
        a = after
        rows = await self._run(self._update, (
            a.brand, a.language, a.category, a.slug, a.title, a.body, list(a.tags), a.version, a.published_version,
            a.updated_at, a.updated_by, a.published_at, a.article_id, before.version,
        ), "update")
        if not applied(rows):
            now = rows[0].get("version") if rows else None
            raise Conflict(f"article {a.article_id} was changed by someone else (version {now}, expected "
                           f"{before.version}): reload it", field="version")
        if after.version != before.version:
            await self._put_history(version_of(after))
        await self._after(before, after)

    async def _put_history(self, v: VersionRow) -> None:
        await self._run(self._put_version, (v.article_id, v.version, v.language, v.category, v.slug, v.title, v.body,
                                            list(v.tags), v.author, v.created_at), "version")

    async def _after(self, before: ArticleRow | None, a: ArticleRow) -> None:
        jobs = [
            self._run(self._list_put, (a.brand, a.language, a.article_id, a.title, a.slug, a.category, a.version,
                                       a.published_version, a.updated_at), "list"),
            self._run(self._part_put, (PARTITION_SCOPE, a.brand, a.language), "list"),
            self._run(self._change, (a.updated_at.astimezone(UTC).strftime("%Y-%m-%d"), a.updated_at, a.article_id),
                      "change"),
        ]
        if before is not None and (before.brand, before.language) != (a.brand, a.language):
            jobs.append(self._run(self._list_del, (before.brand, before.language, a.article_id), "list"))
        await asyncio.gather(*jobs)

    async def versions(self, article_id: UUID, before: int | None = None, limit: int = 50) -> list[VersionRow]:
        """History, newest first."""
        if before is None:
            rows = await self._run(self._versions, (article_id, limit), "versions")
        else:
            rows = await self._run(self._versions_before, (article_id, before, limit), "versions")
        return [_version(r) for r in rows]

    async def version(self, article_id: UUID, version: int) -> VersionRow:
        rows = await self._run(self._version, (article_id, version), "versions")
        if not rows:
            raise NotFound(f"article {article_id} has no version {version}", field="version")
        return _version(rows[0])

    async def listing(self, brand: str, language: str, after: UUID | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
        """One page of a brand's articles in a language, by id (the index rows as stored)."""
        if after is None:
            rows = await self._run(self._list_first, (brand, language, limit), "list")
        else:
            rows = await self._run(self._list_after, (brand, language, after, limit), "list")
        return [{**r, "updated_at": utc(r["updated_at"])} for r in rows]

    async def partitions(self) -> list[tuple[str, str]]:
        return [(r["brand"], r["language"]) for r in await self._run(self._parts, (PARTITION_SCOPE,), "list")]

    async def all_ids(self, brand: str, language: str, page: int = 1000) -> list[UUID]:
        out: list[UUID] = []
        after: UUID | None = None
        while True:
            rows = await self.listing(brand, language, after, page)
            out.extend(r["article_id"] for r in rows)
            if len(rows) < page:
                return out
            after = rows[-1]["article_id"]

    async def changes_since(self, since: datetime, now: datetime) -> list[tuple[datetime, UUID]]:
        """Articles changed at or after `since` (each UTC day from since's to now's)."""
        out: list[tuple[datetime, UUID]] = []
        day = since.astimezone(UTC).date()
        while day <= now.astimezone(UTC).date():
            rows = await self._run(self._changes, (day.isoformat(), since), "change")
            out.extend((utc(r["changed_at"]) or since, r["article_id"]) for r in rows)
            day += timedelta(days=1)
        return out


class TemplateStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._create = p(f"INSERT INTO helpdesk_templates ({_TEMPLATE}) VALUES ({', '.join('?' * 11)}) IF NOT EXISTS")
        self._get = p(f"SELECT {_TEMPLATE} FROM helpdesk_templates WHERE template_id = ?")
        self._update = p(
            "UPDATE helpdesk_templates SET language = ?, name = ?, body = ?, set_status = ?, add_tags = ?, "
            "version = ?, deleted = ?, updated_at = ?, updated_by = ? WHERE template_id = ? IF version = ?"
        )
        self._idx_put = p("INSERT INTO helpdesk_templates_by_language (language, name, template_id) VALUES (?, ?, ?)")
        self._idx_del = p(
            "DELETE FROM helpdesk_templates_by_language WHERE language = ? AND name = ? AND template_id = ?"
        )
        self._idx = p("SELECT template_id FROM helpdesk_templates_by_language WHERE language = ? LIMIT ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"templates_{op}", limit=self._limit)

    async def create(self, t: TemplateRow) -> tuple[TemplateRow, bool]:
        rows = await self._run(self._create, (
            t.template_id, t.language, t.name, t.body, t.set_status, list(t.add_tags), t.version, t.deleted,
            t.created_at, t.updated_at, t.updated_by,
        ), "create")
        if not applied(rows):
            return await self.get(t.template_id), False
        await self._run(self._idx_put, (t.language, t.name, t.template_id), "index")
        return t, True

    async def get(self, template_id: UUID) -> TemplateRow:
        rows = await self._run(self._get, (template_id,), "get")
        if not rows:
            raise NotFound(f"no template {template_id}", field="template_id")
        return _template(rows[0])

    async def update(self, before: TemplateRow, after: TemplateRow) -> None:
        t = after
        rows = await self._run(self._update, (
            t.language, t.name, t.body, t.set_status, list(t.add_tags), t.version, t.deleted, t.updated_at,
            t.updated_by, t.template_id, before.version,
        ), "update")
        if not applied(rows):
            now = rows[0].get("version") if rows else None
            raise Conflict(f"template {t.template_id} was changed by someone else (version {now}, expected "
                           f"{before.version}): reload it", field="version")
        moved = (before.language, before.name) != (t.language, t.name)
        if moved or t.deleted:
            await self._run(self._idx_del, (before.language, before.name, t.template_id), "index")
        if not t.deleted:
            await self._run(self._idx_put, (t.language, t.name, t.template_id), "index")

    async def by_language(self, language: str, limit: int = 500) -> list[TemplateRow]:
        """Live templates of a language, by name (index rows checked against the template)."""
        ids = [r["template_id"] for r in await self._run(self._idx, (language, limit), "index")]
        found = await asyncio.gather(*(self._find(i) for i in ids))
        return [t for t in found if t is not None and not t.deleted and t.language == language]

    async def _find(self, template_id: UUID) -> TemplateRow | None:
        rows = await self._run(self._get, (template_id,), "get")
        return _template(rows[0]) if rows else None


class TicketScan:
    """The tickets a KPI report needs, read through the help desk's queue tables (schemas/cql/007):
    tickets created on given UTC days are exactly the rows of `ticket_queue` partitions
    (brand, status, day) for every status, and the active backlog is every day of the active
    statuses. Each row is checked against the `tickets` row (the index may lag a move)."""

    def __init__(self, session: Session) -> None:
        p = session.prepare
        self.session = session
        self._days = p("SELECT day FROM ticket_queue_days WHERE brand = ? AND status = ? AND day >= ? AND day <= ?")
        cols = "created_at, ticket_id, team, assignee"
        self._first = p(f"SELECT {cols} FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? LIMIT ?")
        self._after = p(f"SELECT {cols} FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? "
                        "AND (created_at, ticket_id) < (?, ?) LIMIT ?")
        # Many tickets a report: read in batches of partitions by one coordinator each.
        self._tickets = p(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_id IN ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"kpi_{op}", limit=self._limit)

    async def tickets(self, ids: Sequence[UUID], batch: int = 100) -> list[Ticket]:
        """The tickets of those ids that exist (in no particular order)."""
        parts = await asyncio.gather(*(self._run(self._tickets, (list(ids[i:i + batch]),), "tickets")
                                       for i in range(0, len(ids), batch)))
        return [ticket_of_row(r) for rows in parts for r in rows]

    async def ids(self, brand: str, statuses: Sequence[str], first_day: str, last_day: str, cap: int,
                  page: int = 1000, team: str | None = None, assignee: str | None = None) -> list[UUID]:
        """Ticket ids in the queue rows of those statuses and days (inclusive, "YYYY-MM-DD"), of
        that team and assignee when given (as the row says: the caller checks the ticket row);
        InvalidInput (field "to") past `cap` ids."""
        out: list[UUID] = []
        for status in statuses:
            days = [r["day"] for r in await self._run(self._days, (brand, status, first_day, last_day), "days")]
            for day in days:
                rows = await self._run(self._first, (brand, status, day, page), "queue")
                while True:
                    out.extend(r["ticket_id"] for r in rows if (team is None or r["team"] == team)
                               and (assignee is None or r["assignee"] == assignee))
                    if len(out) > cap:
                        raise InvalidInput(f"more than {cap} tickets to read: choose a shorter period", field="to")
                    if len(rows) < page:
                        break
                    last = rows[-1]
                    rows = await self._run(self._after, (brand, status, day, last["created_at"], last["ticket_id"],
                                                         page), "queue")
        return list(dict.fromkeys(out))
