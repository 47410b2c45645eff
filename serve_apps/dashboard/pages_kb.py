"""Dashboard pages of the knowledge base (list and search, editor with version history and
diffs), the reply templates' admin page and the help-desk KPIs page. They call the same
service functions as the help-desk API (`serve_apps.helpdesk.kb`, routes_templates, routes_kpis),
so a page and an API call are audited alike."""

from __future__ import annotations

import difflib
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from adapters.cassandra.kb import ArticleRow, VersionRow
from domain import macros
from domain.errors import InvalidInput, NotFound, PitbossError
from domain.policy import Resource
from schemas.macros import TemplateCreate, TemplateUpdate
from serve_apps.backoffice import auditing
from serve_apps.backoffice.deps import BO, Operator, Require, authorize
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.dashboard.render import page, redirect
from serve_apps.helpdesk import routes_kpis, routes_templates
from serve_apps.helpdesk.kb import ArticleCreate, ArticleUpdate, KbService, kb_for, render_markdown, scope_brands
from serve_apps.helpdesk.routes_kb import article_trace

router = APIRouter()
Text = Annotated[str, Form(max_length=200)]
LANGUAGES = ("en", "de", "es", "it", "fr", "sv", "fi", "no", "mt", "pt", "nl", "pl")


def _can(bo: BackOffice, op: Operator, permission: str) -> bool:
    return permission in bo.policy.permissions_for(op.subject.roles)


def _invalid(exc: ValidationError) -> InvalidInput:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidInput(f"{field}: {first['msg']}", field=field)


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _default_brand(bo: BackOffice, op: Operator, kb: KbService) -> str:
    brands = scope_brands(op, kb.indexes.keys(), None)
    if brands:
        return brands[0]
    mine = sorted(b for b in op.subject.brands if b != "*")
    keys = bo.settings.bootstrap_keys()
    return mine[0] if mine else (keys[0][0] if keys else "demo")


# ----------------------------------------------------------------------------- list and search


@router.get("/kb", response_class=HTMLResponse)
async def kb_list(
    request: Request, op: Annotated[Operator, Require("kb.read")], bo: BO,
    brand: Annotated[str | None, Query(max_length=64)] = None,
    language: Annotated[str, Query(max_length=3)] = "en",
    q: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    kb = await kb_for(bo)
    brand = brand or _default_brand(bo, op, kb)
    await authorize(bo, op, "kb.read", Resource(kind="kb_article", brand=brand))
    writer = _can(bo, op, "kb.write")
    hits: list[Any] = []
    error = None
    if q.strip():
        try:
            hits = await kb.search([brand], q.strip(), language=language or None, drafts=writer, limit=20)
        except (PitbossError, ValidationError) as exc:
            error = exc.detail if isinstance(exc, PitbossError) else _invalid(exc).detail
    articles = [] if error else await kb.store.listing(brand, language, None, 200)
    if not writer:
        articles = [a for a in articles if a["published_version"] is not None]
    return page(request, bo, "kb_list.html", op, section="kb", brand=brand, language=language, q=q, hits=hits,
                articles=articles, writer=writer, languages=LANGUAGES, error=error)


# ----------------------------------------------------------------------------- templates admin


async def _templates_page(request: Request, bo: BackOffice, op: Operator, language: str, status: int = 200,
                          **ctx: Any) -> HTMLResponse:
    kb = await kb_for(bo)
    items = await kb.templates.by_language(language)
    return page(request, bo, "kb_templates.html", op, status=status, section="kb", language=language,
                languages=LANGUAGES, templates=items, placeholders=macros.PLACEHOLDERS, pii=macros.PII,
                statuses=("open", "pending", "on_hold", "solved"), **ctx)


@router.get("/kb/templates", response_class=HTMLResponse)
async def templates_page(request: Request, op: Annotated[Operator, Require("kb.write")], bo: BO,
                         language: Annotated[str, Query(max_length=3)] = "en") -> Response:
    return await _templates_page(request, bo, op, language)


@router.post("/kb/templates", response_class=HTMLResponse)
async def templates_create(
    request: Request, op: Annotated[Operator, Require("kb.write")], bo: BO,
    language: Annotated[str, Form(max_length=3)], name: Text, body: Annotated[str, Form(max_length=20_000)],
    set_status: Annotated[str, Form(max_length=16)] = "", add_tags: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    kb = await kb_for(bo)
    try:
        data = TemplateCreate(language=language, name=name, body=body, set_status=set_status or None,
                              add_tags=_tags(add_tags))
        await routes_templates.create_template(bo, kb, op, data)
    except ValidationError as exc:
        return await _templates_page(request, bo, op, language, 422, error=_invalid(exc).detail, draft=body)
    except PitbossError as exc:
        return await _templates_page(request, bo, op, language, exc.status, error=exc.detail, draft=body)
    return redirect(f"/kb/templates?language={data.language}")


@router.post("/kb/templates/{template_id}", response_class=HTMLResponse)
async def templates_update(
    request: Request, template_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO,
    version: Annotated[int, Form(ge=1)], name: Text, body: Annotated[str, Form(max_length=20_000)],
    language: Annotated[str, Form(max_length=3)], set_status: Annotated[str, Form(max_length=16)] = "",
    add_tags: Annotated[str, Form(max_length=2000)] = "", delete: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    kb = await kb_for(bo)
    try:
        if delete:
            await routes_templates.remove_template(bo, kb, op, template_id, version)
        else:
            data = TemplateUpdate(version=version, name=name, body=body, language=language,
                                  set_status=set_status or None, add_tags=_tags(add_tags))
            await routes_templates.update_template(bo, kb, op, template_id, data)
    except ValidationError as exc:
        return await _templates_page(request, bo, op, language, 422, error=_invalid(exc).detail)
    except PitbossError as exc:
        return await _templates_page(request, bo, op, language, exc.status, error=exc.detail)
    return redirect(f"/kb/templates?language={language}")


# ----------------------------------------------------------------------------- editor


@router.get("/kb/new", response_class=HTMLResponse)
async def kb_new(request: Request, op: Annotated[Operator, Require("kb.write")], bo: BO) -> Response:
    kb = await kb_for(bo)
    return page(request, bo, "kb_edit.html", op, section="kb", article=None, brand=_default_brand(bo, op, kb),
                languages=LANGUAGES, writer=True, versions=[], shown=None, diff=None, preview="")


@router.post("/kb/new", response_class=HTMLResponse)
async def kb_create(
    request: Request, op: Annotated[Operator, Require("kb.write")], bo: BO, brand: Annotated[str, Form(max_length=64)],
    language: Annotated[str, Form(max_length=3)], category: Annotated[str, Form(max_length=64)], title: Text,
    body: Annotated[str, Form(max_length=100_000)] = "", tags: Annotated[str, Form(max_length=2000)] = "",
    slug: Annotated[str, Form(max_length=120)] = "",
) -> Response:
    kb = await kb_for(bo)
    form = {"brand": brand, "language": language, "category": category, "title": title, "body": body, "tags": tags,
            "slug": slug}
    try:
        data = ArticleCreate(brand=brand, language=language, category=category, title=title, body=body,
                             tags=_tags(tags), slug=slug or None)
        await authorize(bo, op, "kb.write", Resource(kind="kb_article", brand=data.brand))
        row, created = await kb.create(data, op.id, datetime.now(UTC))
        if created:
            await _audit(bo, op, "kb.article.create", None, row)
    except (ValidationError, PitbossError) as exc:
        err = _invalid(exc) if isinstance(exc, ValidationError) else exc
        return page(request, bo, "kb_edit.html", op, status=err.status, section="kb", article=None, form=form,
                    brand=brand, languages=LANGUAGES, writer=True, versions=[], shown=None, diff=None, preview="",
                    error=err.detail)
    return redirect(f"/kb/{row.article_id}")


async def _audit(bo: BackOffice, op: Operator, action: str, before: ArticleRow | None, after: ArticleRow) -> None:
    await auditing.record(bo, op, action, target_kind="kb_article", target_id=str(after.article_id), brand=after.brand,
                          before=article_trace(before) if before else None, after=article_trace(after))


def _diff(old: VersionRow | ArticleRow, new: VersionRow | ArticleRow) -> str:
    lines = difflib.unified_diff(
        f"# {old.title}\n{old.body}".splitlines(), f"# {new.title}\n{new.body}".splitlines(),
        fromfile=f"version {old.version}", tofile=f"version {new.version}", lineterm="")
    return "\n".join(lines) or "(no difference in title and body)"


async def _editor(request: Request, bo: BackOffice, op: Operator, kb: KbService, article_id: UUID,
                  shown_version: int | None = None, status: int = 200, **ctx: Any) -> HTMLResponse:
    row = await kb.store.get(article_id)
    await authorize(bo, op, "kb.read", Resource(kind="kb_article", id=str(article_id), brand=row.brand))
    writer = _can(bo, op, "kb.write")
    if not writer and row.published_version is None:
        raise NotFound(f"no article {article_id}", field="article_id")
    versions = await kb.store.versions(article_id, None, 50) if writer else []
    shown = diff = None
    if writer and shown_version is not None:
        shown = await kb.store.version(article_id, shown_version)
        diff = _diff(shown, row)
    body_source = row.body
    if not writer and row.published_version != row.version and row.published_version is not None:
        body_source = (await kb.store.version(article_id, row.published_version)).body
    return page(request, bo, "kb_edit.html", op, status=status, section="kb", article=row, brand=row.brand,
                languages=LANGUAGES, writer=writer, versions=versions, shown=shown, diff=diff,
                preview=render_markdown(shown.body if shown else body_source), **ctx)


@router.get("/kb/{article_id}", response_class=HTMLResponse)
async def kb_edit(request: Request, article_id: UUID, op: Annotated[Operator, Require("kb.read")], bo: BO,
                  v: Annotated[int | None, Query(ge=1)] = None) -> Response:
    return await _editor(request, bo, op, await kb_for(bo), article_id, v)


@router.post("/kb/{article_id}", response_class=HTMLResponse)
async def kb_save(
    request: Request, article_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO,
    version: Annotated[int, Form(ge=1)], language: Annotated[str, Form(max_length=3)],
    category: Annotated[str, Form(max_length=64)], title: Text, body: Annotated[str, Form(max_length=100_000)] = "",
    tags: Annotated[str, Form(max_length=2000)] = "", slug: Annotated[str, Form(max_length=120)] = "",
) -> Response:
    kb = await kb_for(bo)
    form = {"language": language, "category": category, "title": title, "body": body, "tags": tags, "slug": slug}
    try:
        before = await kb.store.get(article_id)
        await authorize(bo, op, "kb.write", Resource(kind="kb_article", id=str(article_id), brand=before.brand))
        data = ArticleUpdate(version=version, language=language, category=category, title=title, body=body,
                             tags=_tags(tags), slug=slug or None)
        after = await kb.update(article_id, data, op.id, datetime.now(UTC))
        if after.version != before.version:
            await _audit(bo, op, "kb.article.update", before, after)
    except (ValidationError, PitbossError) as exc:
        err = _invalid(exc) if isinstance(exc, ValidationError) else exc
        return await _editor(request, bo, op, kb, article_id, status=err.status, error=err.detail, form=form)
    return redirect(f"/kb/{article_id}")


@router.post("/kb/{article_id}/publish", response_class=HTMLResponse)
async def kb_publish(request: Request, article_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO,
                     version: Annotated[int, Form(ge=1)]) -> Response:
    return await _publication(request, bo, op, article_id, version, publish=True)


@router.post("/kb/{article_id}/unpublish", response_class=HTMLResponse)
async def kb_unpublish(request: Request, article_id: UUID, op: Annotated[Operator, Require("kb.write")], bo: BO,
                       version: Annotated[int, Form(ge=1)]) -> Response:
    return await _publication(request, bo, op, article_id, version, publish=False)


async def _publication(request: Request, bo: BackOffice, op: Operator, article_id: UUID, version: int,
                       publish: bool) -> Response:
    kb = await kb_for(bo)
    try:
        before = await kb.store.get(article_id)
        await authorize(bo, op, "kb.write", Resource(kind="kb_article", id=str(article_id), brand=before.brand))
        change = kb.publish if publish else kb.unpublish
        after = await change(article_id, version, op.id, datetime.now(UTC))
        if after != before:
            await _audit(bo, op, "kb.article.publish" if publish else "kb.article.unpublish", before, after)
    except PitbossError as exc:
        return await _editor(request, bo, op, kb, article_id, status=exc.status, error=exc.detail)
    return redirect(f"/kb/{article_id}")


# ----------------------------------------------------------------------------- KPIs


def _day(value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("a date is YYYY-MM-DD", field="from") from exc


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@router.get("/helpdesk/kpis", response_class=HTMLResponse)
async def kpis_page(
    request: Request, op: Annotated[Operator, Require("ticket.read")], bo: BO,
    brand: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    team: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    kb = await kb_for(bo)
    brand = brand or _default_brand(bo, op, kb)
    today = datetime.now(UTC).date()
    first = _day(start, today - timedelta(days=6))
    last = _day(end, today)
    error = None
    report = scope = None
    try:
        period = datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC)
        report, scope = await routes_kpis.kpi_report(bo, kb, op, brand, *period, team or None)
    except InvalidInput as exc:
        error = exc.detail
    return page(request, bo, "kpis.html", op, section="helpdesk-kpis", brand=brand, start=first.isoformat(),
                end=last.isoformat(), team=team or "", report=report, scope=scope, error=error, minutes=_minutes)
