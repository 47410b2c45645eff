"""Help desk: the knowledge base (`/helpdesk/v1/kb/...`), the public FAQ (`/helpdesk/v1/faq/...`)
and article suggestions on a ticket. The service is `serve_apps.helpdesk.kb`.

Access: reading and searching need kb.read (drafts only for kb.write holders), editing kb.write,
each on the article's brand; suggestions need ticket.read on the ticket's brand; the FAQ is
public (published articles only, no internal fields) and rate-limited per client address.
Every change is on the audit record with what it changed; reads of the KB are not (its
content is not personal data).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from adapters.cassandra.kb import ArticleRow
from domain.errors import NotFound
from domain.policy import Resource
from schemas.common import Brand
from schemas.kb import LIMIT_MAX, OFFSET_MAX, QUERY_MAX, Category, Language, SearchHit
from serve_apps.backoffice import auditing
from serve_apps.backoffice.deps import BO, Operator, Public, Require, authorize, client_ip
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.kb import (
    KB,
    ArticleCreate,
    ArticleOut,
    ArticlePublish,
    ArticleUpdate,
    FaqArticle,
    FaqHit,
    KbService,
    VersionOut,
    article_out,
    primary_language,
    render_markdown,
    scope_brands,
    version_out,
)

router = APIRouter(tags=["knowledge base"])
Q = Annotated[str, Query(min_length=1, max_length=QUERY_MAX)]


class ArticleSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: UUID
    title: str
    slug: str
    category: str
    status: str
    version: int
    published_version: int | None
    updated_at: datetime | None


class ArticlePage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[ArticleSummary]
    next_cursor: str | None


class HitPage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[SearchHit]


class FaqPage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[FaqHit]


class VersionPage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[VersionOut]
    next_cursor: str | None


def _can(bo: BackOffice, op: Operator, permission: str) -> bool:
    return permission in bo.policy.permissions_for(op.subject.roles)


def article_trace(a: ArticleRow) -> dict[str, Any]:
    """What the audit record keeps of an article (the body by its length: the history has the text)."""
    return {"version": a.version, "published_version": a.published_version, "title": a.title, "slug": a.slug,
            "language": a.language, "category": a.category, "tags": list(a.tags), "body_chars": len(a.body)}


async def _article(bo: BackOffice, kb: KbService, op: Operator, article_id: UUID, permission: str) -> ArticleRow:
    row = await kb.store.get(article_id)
    await authorize(bo, op, permission, Resource(kind="kb_article", id=str(article_id), brand=row.brand))
    return row


async def _changed(bo: BackOffice, op: Operator, action: str, before: ArticleRow | None, after: ArticleRow) -> None:
    await auditing.record(bo, op, action, target_kind="kb_article", target_id=str(after.article_id), brand=after.brand,
                          before=article_trace(before) if before else None, after=article_trace(after))


# ----------------------------------------------------------------------------- articles


@router.post("/kb/articles", status_code=201, response_model=ArticleOut,
             summary="Create an article (a draft, version 1); a retry with the same article_id returns it (200)")
async def create_article(body: ArticleCreate, op: Annotated[Operator, Require("kb.write")], bo: BO,
                         kb: KB) -> Response:
    await authorize(bo, op, "kb.write", Resource(kind="kb_article", brand=body.brand))
    row, created = await kb.create(body, op.id, datetime.now(UTC))
    if created:
        await _changed(bo, op, "kb.article.create", None, row)
    return JSONResponse(article_out(row).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/kb/articles", response_model=ArticlePage, summary="A brand's articles in one language, by id")
async def list_articles(
    op: Annotated[Operator, Require("kb.read")], bo: BO, kb: KB, brand: Brand, language: Language,
    cursor: Annotated[UUID | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ArticlePage:
    await authorize(bo, op, "kb.read", Resource(kind="kb_article", brand=brand))
    rows = await kb.store.listing(brand, language, cursor, limit)
    drafts = _can(bo, op, "kb.write")
    items = [ArticleSummary(article_id=r["article_id"], title=r["title"], slug=r["slug"], category=r["category"],
                            status="published" if r["published_version"] is not None else "draft",
                            version=r["version"], published_version=r["published_version"], updated_at=r["updated_at"])
             for r in rows if drafts or r["published_version"] is not None]
    return ArticlePage(items=items, next_cursor=str(rows[-1]["article_id"]) if len(rows) == limit else None)


@router.get("/kb/articles/{article_id}", response_model=ArticleOut,
            summary="An article: its newest draft for kb.write holders, else its published version")
async def get_article(article_id: UUID, op: Annotated[Operator, Require("kb.read")], bo: BO, kb: KB) -> ArticleOut:
    row = await _article(bo, kb, op, article_id, "kb.read")
    if _can(bo, op, "kb.write"):
        return article_out(row)
    if row.published_version is None:
        raise NotFound(f"no article {article_id}", field="article_id")
    if row.published_version != row.version:
        v = await kb.store.version(article_id, row.published_version)
        row = ArticleRow(row.article_id, row.brand, v.language, v.category, v.slug, v.title, v.body, v.tags,
                         v.version, v.version, row.created_at, row.created_by, row.published_at or row.updated_at,
                         v.author, row.published_at)
    return article_out(row)


@router.patch("/kb/articles/{article_id}", response_model=ArticleOut,
              summary="Save a new draft version (send the version you edited: 409 if it changed since)")
async def update_article(article_id: UUID, body: ArticleUpdate, op: Annotated[Operator, Require("kb.write")], bo: BO,
                         kb: KB) -> ArticleOut:
    before = await _article(bo, kb, op, article_id, "kb.write")
    after = await kb.update(article_id, body, op.id, datetime.now(UTC))
    if after.version != before.version:
        await _changed(bo, op, "kb.article.update", before, after)
    return article_out(after)


@router.post("/kb/articles/{article_id}/publish", response_model=ArticleOut,
             summary="Publish the newest version (with `version`: only if it is still the newest, else 409)")
async def publish_article(article_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO, kb: KB,
                          body: ArticlePublish | None = None) -> ArticleOut:
    before = await _article(bo, kb, op, article_id, "kb.write")
    after = await kb.publish(article_id, body.version if body else None, op.id, datetime.now(UTC))
    if after != before:
        await _changed(bo, op, "kb.article.publish", before, after)
    return article_out(after)


@router.post("/kb/articles/{article_id}/unpublish", response_model=ArticleOut,
             summary="Withdraw the article from the public FAQ and from agents' published search")
async def unpublish_article(article_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO, kb: KB,
                            body: ArticlePublish | None = None) -> ArticleOut:
    before = await _article(bo, kb, op, article_id, "kb.write")
    after = await kb.unpublish(article_id, body.version if body else None, op.id, datetime.now(UTC))
    if after != before:
        await _changed(bo, op, "kb.article.unpublish", before, after)
    return article_out(after)


@router.get("/kb/articles/{article_id}/versions", response_model=VersionPage,
            summary="The article's saved versions, newest first (cursor: the last version shown)")
async def list_versions(article_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO, kb: KB,
                        cursor: Annotated[int | None, Query(ge=1)] = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> VersionPage:
    row = await _article(bo, kb, op, article_id, "kb.write")
    versions = await kb.store.versions(article_id, cursor, limit)
    return VersionPage(items=[version_out(v, row.published_version) for v in versions],
                       next_cursor=str(versions[-1].version) if len(versions) == limit else None)


@router.get("/kb/articles/{article_id}/versions/{version}", response_model=VersionOut, summary="One saved version")
async def get_version(article_id: UUID, version: int, op: Annotated[Operator, Require("kb.write")], bo: BO,
                      kb: KB) -> VersionOut:
    row = await _article(bo, kb, op, article_id, "kb.write")
    return version_out(await kb.store.version(article_id, version), row.published_version)


# ----------------------------------------------------------------------------- search


@router.get("/kb/search", response_model=HitPage,
            summary="Ranked full-text search (BM25F) for agents; drafts included for kb.write holders")
async def search(
    op: Annotated[Operator, Require("kb.read")], bo: BO, kb: KB, q: Q,
    language: Language | None = None, category: Category | None = None, brand: Brand | None = None,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 10, offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
    prefix: bool = False,
) -> HitPage:
    brands = scope_brands(op, kb.indexes.keys(), brand)
    hits = await kb.search(brands, q, language=language, category=category, drafts=_can(bo, op, "kb.write"),
                           limit=limit, offset=offset, prefix=prefix)
    return HitPage(items=hits)


# ----------------------------------------------------------------------------- public FAQ


@router.get("/faq/search", response_model=FaqPage, tags=["public FAQ"],
            summary="Public: search a brand's published articles (rate-limited per client address)")
async def faq_search(request: Request, kb: KB, brand: Brand, q: Q, language: Language | None = None,
                     category: Category | None = None, limit: Annotated[int, Query(ge=1, le=20)] = 10,
                     _: Annotated[None, Public] = None) -> FaqPage:
    await kb.rate_limit(client_ip(request))
    hits = await kb.search([brand], q, language=language, category=category, limit=limit)
    return FaqPage(items=[FaqHit(slug=kb.slug_of(h.article_id), title=h.title, snippet=h.snippet, language=h.language,
                                 category=h.category, score=round(h.score, 4)) for h in hits])


@router.get("/faq/articles/{slug}", response_model=FaqArticle, tags=["public FAQ"],
            summary="Public: one published article, its body as safe HTML (rate-limited per client address)")
async def faq_article(request: Request, slug: Annotated[str, Path(max_length=120)], kb: KB, brand: Brand,
                      _: Annotated[None, Public] = None) -> FaqArticle:
    await kb.rate_limit(client_ip(request))
    article_id = await kb.store.by_slug(brand, slug)
    row = await kb.store.find(article_id) if article_id else None
    if row is None or row.published_version is None:
        raise NotFound(f"no published article {slug!r} in {brand}", field="slug")
    v = row if row.published_version == row.version else await kb.store.version(row.article_id, row.published_version)
    return FaqArticle(slug=slug, language=v.language, category=v.category, title=v.title,
                      body_html=render_markdown(v.body), tags=list(v.tags), published_at=row.published_at)


# ----------------------------------------------------------------------------- suggestions on a ticket


def suggestions_html(hits: list[SearchHit], slugs: dict[UUID, str]) -> str:
    """The fragment for the ticket page's <div id="kb-suggestions"> (titles escaped; snippets are
    the index's escaped text with <mark>)."""
    if not hits:
        return '<p class="muted" data-testid="kb-suggestions-empty">No matching article.</p>'
    items = "".join(
        f'<li data-testid="kb-suggestion"><a href="/dashboard/kb/{h.article_id}">{html.escape(h.title)}</a>'
        f' <span class="muted">{html.escape(h.category)} · {html.escape(h.language)}'
        f' · /faq/{html.escape(slugs.get(h.article_id, ""))}</span><br><small>{h.snippet}</small></li>'
        for h in hits)
    return f'<ul class="kb-suggestions">{items}</ul>'


@router.get("/tickets/{ticket_id}/suggestions", response_model=HitPage,
            summary="Published articles matching the ticket's subject and messages, in its language "
                    "(an HTML fragment when HX-Request is sent)")
async def suggestions(request: Request, ticket_id: UUID, op: Annotated[Operator, Require("ticket.read")], bo: BO,
                      kb: KB, limit: Annotated[int, Query(ge=1, le=20)] = 5) -> Response:
    hits = await ticket_suggestions(bo, kb, op, ticket_id, limit)
    if request.headers.get("HX-Request"):
        return HTMLResponse(suggestions_html(hits, {h.article_id: kb.slug_of(h.article_id) for h in hits}))
    return JSONResponse(HitPage(items=hits).model_dump(mode="json"))


async def ticket_suggestions(bo: BackOffice, kb: KbService, op: Operator, ticket_id: UUID,
                             limit: int = 5) -> list[SearchHit]:
    t = await kb.tickets.get(ticket_id)
    await authorize(bo, op, "ticket.read", Resource(kind="ticket", id=str(ticket_id), brand=t.brand))
    messages = await kb.tickets.messages(t, 200)
    # The request (the first message, even when an agent typed it for a caller) and the player's words;
    # agents' replies and internal notes would pull in what was already sent.
    text = "\n".join([t.subject, *(m.body for i, m in enumerate(messages) if i == 0 or m.author_kind == "player")])
    return await kb.suggest(t.brand, text, primary_language(t.language), limit)
