"""Dashboard pages: segments (rule builder, live size and sample, size over time, members with
personal data masked by role, CSV export) and A/B experiments (create on a segment, split, holdout).

The rule builder is a plain form: groups of (feature, operator, value) rows, each group joined by
all/any and optionally negated, the groups joined by all/any. `form_rule` turns the form into the
JSON rule tree; a JSON textarea takes a hand-written tree instead. htmx re-renders the builder
(add or remove a row or group) and the live preview as the form changes; without htmx the same
buttons post the whole page. Nothing here evaluates a rule: the service checks and the engine
evaluates, exactly as for the JSON API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from markupsafe import Markup, escape
from pydantic import ValidationError
from starlette.datastructures import FormData

from domain.errors import InvalidInput, PitbossError
from domain.policy import ALL
from schemas.experiments import Variant
from schemas.features import CATALOGUE
from schemas.segment_api import ExperimentCreate, SegmentCreate, SegmentPublic, SegmentUpdate, SizePoint
from serve_apps.backoffice.deps import BO, Operator, Require
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.dashboard.render import page, redirect
from serve_apps.segments import service

router = APIRouter()
MAX_GROUPS = 10
MAX_ROWS = 20
COMBINATORS = ("all", "any")


# ---------------------------------------------------------------------------- the builder form


@dataclass
class Row:
    feature: str = "country"
    op: str = "eq"
    value: str = ""


@dataclass
class Group:
    join: str = "all"
    negate: bool = False
    rows: list[Row] = field(default_factory=lambda: [Row()])


@dataclass
class Builder:
    join: str = "all"
    groups: list[Group] = field(default_factory=lambda: [Group()])
    rule_json: str = ""


def _text(form: FormData, name: str, default: str = "", limit: int = 2000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else default


def _choice(value: str, allowed: tuple[str, ...], default: str) -> str:
    return value if value in allowed else default


def read_builder(form: FormData) -> Builder:
    """The builder's state from its form fields (`g{i}_join`, `g{i}_not`, `r{i}_{j}_feature|op|value`)."""
    b = Builder(join=_choice(_text(form, "join"), COMBINATORS, "all"), groups=[],
                rule_json=_text(form, "rule_json", limit=200_000).strip())
    groups = min(_int(_text(form, "groups"), 1), MAX_GROUPS)
    for i in range(groups):
        g = Group(join=_choice(_text(form, f"g{i}_join"), COMBINATORS, "all"), negate=bool(form.get(f"g{i}_not")),
                  rows=[])
        for j in range(min(_int(_text(form, f"g{i}_rows"), 1), MAX_ROWS)):
            g.rows.append(Row(feature=_text(form, f"r{i}_{j}_feature", limit=64),
                              op=_text(form, f"r{i}_{j}_op", limit=16), value=_text(form, f"r{i}_{j}_value")))
        b.groups.append(g)
    if not b.groups:
        b.groups.append(Group())
    return b


def _int(text: str, default: int) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return default


def apply_action(b: Builder, action: str) -> Builder:
    """`add_row:i`, `del_row:i:j`, `add_group`, `del_group:i`: what the builder's buttons ask."""
    parts = action.split(":")
    try:
        if parts[0] == "add_row" and len(b.groups[int(parts[1])].rows) < MAX_ROWS:
            b.groups[int(parts[1])].rows.append(Row())
        elif parts[0] == "del_row":
            rows = b.groups[int(parts[1])].rows
            if len(rows) > 1:
                del rows[int(parts[2])]
        elif parts[0] == "add_group" and len(b.groups) < MAX_GROUPS:
            b.groups.append(Group())
        elif parts[0] == "del_group" and len(b.groups) > 1:
            del b.groups[int(parts[1])]
    except (IndexError, ValueError):
        pass  # a stale button: the builder stays as it is
    return b


def _value(text: str, kind: str, path: str) -> Any:
    """A typed rule value from what was typed, by the feature's kind; InvalidInput names the part."""
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        word = "an integer" if kind == "int" else "a number"
        raise InvalidInput(f"expected {word}, got {text!r}", field=path) from None
    if kind == "bool":
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise InvalidInput(f"expected true or false, got {text!r}", field=path)
    return text


def _window(text: str, path: str) -> dict[str, int]:
    """`7`, `7d` or `12h`: a look-back window."""
    t = text.strip().lower()
    unit = "hours" if t.endswith("h") else "days"
    try:
        n = int(t.rstrip("dh").strip())
    except ValueError:
        raise InvalidInput(f"a window is a number of days (7 or 7d) or hours (12h), got {text!r}", field=path) from None
    return {unit: n}


def _leaf(row: Row, path: str) -> dict[str, Any]:
    spec = CATALOGUE.get(row.feature)
    if spec is None:
        raise InvalidInput(f"unknown feature {row.feature!r}", field=f"{path}.feature")
    op = row.op
    if op == "is_null":
        return {"feature": row.feature, "op": op}
    if op in ("within", "not_within"):
        return {"feature": row.feature, "op": op, "last": _window(row.value, f"{path}.last")}
    if op == "in":
        items = [v for v in row.value.split(",") if v.strip()]
        return {"feature": row.feature, "op": op,
                "values": [_value(v, spec.kind, f"{path}.values[{k}]") for k, v in enumerate(items)]}
    if op == "between":
        lo, sep, hi = row.value.partition("..")
        if not sep:
            raise InvalidInput("between takes min..max", field=f"{path}.min")
        return {"feature": row.feature, "op": op, "min": _value(lo, spec.kind, f"{path}.min"),
                "max": _value(hi, spec.kind, f"{path}.max")}
    return {"feature": row.feature, "op": op, "value": _value(row.value, spec.kind, f"{path}.value")}


def form_rule(b: Builder) -> dict[str, Any]:
    """The JSON rule tree of the builder (or of the JSON textarea when filled). Paths in errors are
    the tree's own (`rule.all[0].all[1].value`), the same the API names."""
    if b.rule_json:
        try:
            data = json.loads(b.rule_json)
        except ValueError as exc:
            raise InvalidInput(f"not JSON: {exc}", field="rule") from None
        if not isinstance(data, dict):
            raise InvalidInput("a rule is a JSON object", field="rule")
        return data
    groups: list[dict[str, Any]] = []
    for i, g in enumerate(b.groups):
        base = f"rule.{b.join}[{i}]"
        inner = f"{base}.not" if g.negate else base
        node: dict[str, Any] = {g.join: [_leaf(r, f"{inner}.{g.join}[{j}]") for j, r in enumerate(g.rows)]}
        groups.append({"not": node} if g.negate else node)
    return {b.join: groups}


def rule_builder(rule: dict[str, Any]) -> Builder:
    """The builder for a stored rule when it has the builder's shape; else the JSON textarea."""
    b = Builder(join=next(iter(rule), "all"), groups=[])
    top = rule.get(b.join)
    if b.join in COMBINATORS and isinstance(top, list) and len(rule) == 1:
        for node in top:
            negate = isinstance(node, dict) and set(node) == {"not"}
            inner = node["not"] if negate else node
            if not (isinstance(inner, dict) and len(inner) == 1 and next(iter(inner)) in COMBINATORS):
                break
            join = next(iter(inner))
            rows = [_row(leaf) for leaf in inner[join]]
            if any(r is None for r in rows):
                break
            b.groups.append(Group(join=join, negate=negate, rows=[r for r in rows if r is not None]))
        else:
            if b.groups:
                return b
    return Builder(groups=[Group()], rule_json=json.dumps(rule, indent=2))


def _row(leaf: Any) -> Row | None:
    if not isinstance(leaf, dict) or "feature" not in leaf:
        return None
    op = str(leaf.get("op"))
    if op == "is_null":
        value = ""
    elif op in ("within", "not_within"):
        last = leaf.get("last") or {}
        value = f"{last['hours']}h" if "hours" in last else f"{last.get('days', '')}d"
    elif op == "in":
        value = ",".join(_show(v) for v in leaf.get("values", []))
    elif op == "between":
        value = f"{_show(leaf.get('min'))}..{_show(leaf.get('max'))}"
    else:
        value = _show(leaf.get("value"))
    return Row(feature=str(leaf["feature"]), op=op, value=value)


def _show(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# ---------------------------------------------------------------------------- the size chart


def size_chart(points: list[SizePoint], width: int = 640, height: int = 160) -> Markup:
    """An inline SVG line of the size over time, drawn here (no chart library, no script)."""
    if not points:
        return Markup('<p class="muted" data-testid="size-chart-empty">No size samples yet.</p>')
    pad = 36
    xs = [p.at.timestamp() for p in points]
    ys = [p.count for p in points]
    x0, x1 = min(xs), max(xs)
    y1 = max(max(ys), 1)
    span = (x1 - x0) or 1.0

    def sx(x: float) -> float:
        return pad + (x - x0) / span * (width - 2 * pad) if len(points) > 1 else width / 2

    def sy(y: int) -> float:
        return height - pad / 2 - y / y1 * (height - pad)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=True))
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#0f5bd8"/>'
                   for x, y in zip(xs, ys, strict=True))
    first, last = escape(points[0].at.strftime("%Y-%m-%d %H:%M")), escape(points[-1].at.strftime("%Y-%m-%d %H:%M"))
    return Markup(
        f'<svg data-testid="size-chart" role="img" aria-label="segment size over time" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        f'<line x1="{pad}" y1="{height - pad / 2}" x2="{width - pad}" y2="{height - pad / 2}" stroke="#d9dde5"/>'
        f'<text x="2" y="14" font-size="11" fill="#667085">{y1}</text>'
        f'<text x="2" y="{height - pad / 2}" font-size="11" fill="#667085">0</text>'
        f'<polyline points="{line}" fill="none" stroke="#0f5bd8" stroke-width="2"/>{dots}'
        f'<text x="{pad}" y="{height - 2}" font-size="11" fill="#667085">{first}</text>'
        f'<text x="{width - pad}" y="{height - 2}" font-size="11" text-anchor="end" fill="#667085">{last}</text>'
        "</svg>"
    )


# ---------------------------------------------------------------------------- helpers


def _can(bo: BackOffice, op: Operator, permission: str) -> bool:
    return permission in bo.policy.permissions_for(op.subject.roles)


def _brands(op: Operator) -> list[str] | None:
    """The brands to offer in a select, or None when the operator has every brand (free text)."""
    return None if ALL in op.subject.brands else sorted(op.subject.brands)


def _builder_context(bo: BackOffice, op: Operator, b: Builder) -> dict[str, Any]:
    return {
        "builder": b,
        "catalogue": service.features(),
        "combinators": COMBINATORS,
        "max_groups": MAX_GROUPS,
        "max_rows": MAX_ROWS,
    }


def _is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


async def _editor(
    request: Request, bo: BackOffice, op: Operator, b: Builder, segment: SegmentPublic | None, *,
    status: int = 200, error: PitbossError | None = None, form: dict[str, str] | None = None,
) -> HTMLResponse:
    ctx: dict[str, Any] = {}
    if segment is not None:
        ctx["experiments"] = [e for e in (await service.list_experiments(bo, op, None, 200))[0]
                              if e.segment_id == segment.segment_id]
    return page(
        request, bo, "segment.html", op, status=status, section="segments", segment=segment, brands=_brands(op),
        error=error, form=form or {}, can_write=_can(bo, op, "segment.write"),
        can_export=_can(bo, op, "segment.export"), **_builder_context(bo, op, b), **ctx,
    )


# ---------------------------------------------------------------------------- segment pages


@router.get("/segments", response_class=HTMLResponse)
async def segments(
    request: Request,
    op: Annotated[Operator, Require("segment.read")],
    bo: BO,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    items, nxt = await service.list_segments(bo, op, cursor, 50)
    return page(request, bo, "segments.html", op, section="segments", segments=items, next_cursor=nxt,
                can_write=_can(bo, op, "segment.write"))


@router.get("/segments/new", response_class=HTMLResponse)
async def new_segment(request: Request, op: Annotated[Operator, Require("segment.write")], bo: BO) -> Response:
    return await _editor(request, bo, op, Builder(), None)


@router.post("/segments/new", response_class=HTMLResponse)
async def create_segment(request: Request, op: Annotated[Operator, Require("segment.write")], bo: BO) -> Response:
    form = await request.form()
    b = read_builder(form)
    fields = {k: _text(form, k, limit=2000) for k in ("name", "description", "brand", "segment_id")}
    try:
        data = SegmentCreate(
            segment_id=UUID(fields["segment_id"]) if fields["segment_id"] else uuid4(),
            brand=fields["brand"], name=fields["name"], description=fields["description"], rule=form_rule(b),
        )
        created, _ = await service.create_segment(bo, op, data)
    except ValidationError as exc:
        first = exc.errors()[0]
        err = InvalidInput(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}",
                           field=".".join(str(p) for p in first["loc"]))
        return await _editor(request, bo, op, b, None, status=422, error=err, form=fields)
    except ValueError:
        err = InvalidInput("not a segment id", field="segment_id")
        return await _editor(request, bo, op, b, None, status=422, error=err, form=fields)
    except PitbossError as exc:
        return await _editor(request, bo, op, b, None, status=exc.status, error=exc, form=fields)
    return redirect(f"/segments/{created.segment_id}")


@router.post("/segments/builder", response_class=HTMLResponse)
async def builder(request: Request, op: Annotated[Operator, Require("segment.read")], bo: BO) -> Response:
    """The builder re-rendered after one of its buttons (add or remove a row or group)."""
    form = await request.form()
    b = apply_action(read_builder(form), _text(form, "action", limit=64))
    return page(request, bo, "_segment_builder.html", op, **_builder_context(bo, op, b))


@router.post("/segments/preview", response_class=HTMLResponse)
async def preview(request: Request, op: Annotated[Operator, Require("segment.read")], bo: BO) -> Response:
    """The live size and a sample of the rule being built (personal data masked by role)."""
    form = await request.form()
    brand = _text(form, "brand", limit=64) or None
    try:
        rule = form_rule(read_builder(form))
        result = await service.preview(bo, op, rule, 10, 0, brand)
    except PitbossError as exc:
        return page(request, bo, "_segment_preview.html", op, error=exc)
    return page(request, bo, "_segment_preview.html", op, result=result,
                rule_text=json.dumps(rule, indent=2), brand=brand)


@router.get("/segments/{segment_id}", response_class=HTMLResponse)
async def segment(segment_id: UUID, request: Request, op: Annotated[Operator, Require("segment.read")], bo: BO
                  ) -> Response:
    seg = await service.get_segment(bo, op, segment_id)
    return await _editor(request, bo, op, rule_builder(seg.rule), seg)


@router.post("/segments/{segment_id}", response_class=HTMLResponse)
async def update_segment(
    segment_id: UUID, request: Request, op: Annotated[Operator, Require("segment.write")], bo: BO
) -> Response:
    form = await request.form()
    b = read_builder(form)
    seg = await service.get_segment(bo, op, segment_id)
    try:
        data = SegmentUpdate(version=_int(_text(form, "version"), 0), name=_text(form, "name") or None,
                             description=_text(form, "description"), rule=form_rule(b))
        await service.update_segment(bo, op, segment_id, data)
    except ValidationError as exc:
        first = exc.errors()[0]
        err = InvalidInput(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        return await _editor(request, bo, op, b, seg, status=422, error=err)
    except PitbossError as exc:
        return await _editor(request, bo, op, b, seg, status=exc.status, error=exc)
    return redirect(f"/segments/{segment_id}")


@router.post("/segments/{segment_id}/retire", response_class=HTMLResponse)
async def retire_segment(segment_id: UUID, op: Annotated[Operator, Require("segment.write")], bo: BO) -> Response:
    await service.retire_segment(bo, op, segment_id)
    return redirect(f"/segments/{segment_id}")


@router.get("/segments/{segment_id}/live", response_class=HTMLResponse)
async def live(segment_id: UUID, request: Request, op: Annotated[Operator, Require("segment.read")], bo: BO
               ) -> Response:
    """Size, size over time and the first members: the detail page polls this as events arrive."""
    seg = await service.get_segment(bo, op, segment_id)
    points = await service.sizes(bo, op, segment_id, None)
    members: list[Any] = []
    nxt = None
    if seg.status == service.ACTIVE:
        members, nxt = await service.members(bo, op, segment_id, None, 25, service.DEFAULT_FEATURES)
    size = seg.count if seg.count is not None else (points[-1].count if points else None)
    return page(request, bo, "_segment_live.html", op, segment=seg, chart=size_chart(points),
                size=size, members=members, more=nxt is not None,
                features=service.DEFAULT_FEATURES)


@router.get("/segments/{segment_id}/export.csv")
async def export(segment_id: UUID, op: Annotated[Operator, Require("segment.export")], bo: BO) -> Response:
    lines = await service.export_csv(bo, op, segment_id, service.DEFAULT_FEATURES)
    return StreamingResponse(lines, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"', "Cache-Control": "no-store"})


# ---------------------------------------------------------------------------- experiments


def _variants(text: str) -> list[Variant]:
    """`name:weight` per line (or comma-separated)."""
    out: list[Variant] = []
    for i, part in enumerate(p.strip() for p in text.replace(",", "\n").splitlines()):
        if not part:
            continue
        name, _, weight = part.partition(":")
        try:
            out.append(Variant(name=name.strip(), weight=int(weight or "1")))
        except (ValueError, ValidationError):
            raise InvalidInput(f"variant {part!r}: name:weight, weight a positive integer, name not 'holdout'",
                               field=f"variants[{i}]") from None
    return out


def _holdout_bp(text: str) -> int:
    try:
        return round(float(text or "0") * 100)
    except ValueError:
        raise InvalidInput("the holdout is a percentage such as 10 or 12.5", field="holdout_bp") from None


def _when(text: str, field_name: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput("a date and time such as 2026-03-01T09:00", field=field_name) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def _experiments_page(request: Request, bo: BackOffice, op: Operator, *, status: int = 200,
                            **ctx: Any) -> HTMLResponse:
    items, _ = await service.list_experiments(bo, op, None, 200)
    segments, _ = await service.list_segments(bo, op, None, 200)
    names = {s.segment_id: s.name for s in segments}
    return page(request, bo, "experiments.html", op, status=status, section="experiments", experiments=items,
                segments=[s for s in segments if s.status == service.ACTIVE], names=names,
                can_write=_can(bo, op, "segment.write"), **ctx)


@router.get("/experiments", response_class=HTMLResponse)
async def experiments(
    request: Request,
    op: Annotated[Operator, Require("segment.read")],
    bo: BO,
    segment_id: Annotated[UUID | None, Query()] = None,
) -> Response:
    return await _experiments_page(request, bo, op, form={"segment_id": str(segment_id or "")})


@router.post("/experiments", response_class=HTMLResponse)
async def create_experiment(
    request: Request,
    op: Annotated[Operator, Require("segment.write")],
    bo: BO,
    experiment_key: Annotated[str, Form(max_length=64)],
    segment_id: Annotated[str, Form(max_length=64)],
    variants: Annotated[str, Form(max_length=2000)],
    holdout_percent: Annotated[str, Form(max_length=16)] = "0",
    starts_at: Annotated[str, Form(max_length=40)] = "",
    ends_at: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    form = {"experiment_key": experiment_key, "segment_id": segment_id, "variants": variants,
            "holdout_percent": holdout_percent, "starts_at": starts_at, "ends_at": ends_at}
    try:
        data = ExperimentCreate(
            experiment_key=experiment_key.strip(), segment_id=UUID(segment_id), variants=_variants(variants),
            holdout_bp=_holdout_bp(holdout_percent),
            starts_at=_when(starts_at, "starts_at") or datetime.now(UTC) - timedelta(seconds=1),
            ends_at=_when(ends_at, "ends_at"),
        )
        await service.create_experiment(bo, op, data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return await _experiments_page(request, bo, op, status=422, form=form,
                                       error=InvalidInput(f"{loc}: {first['msg']}", field=loc))
    except ValueError:
        return await _experiments_page(request, bo, op, status=422, form=form,
                                       error=InvalidInput("choose a segment", field="segment_id"))
    except PitbossError as exc:
        return await _experiments_page(request, bo, op, status=exc.status, form=form, error=exc)
    return redirect(f"/experiments/{experiment_key.strip()}")


@router.get("/experiments/{experiment_key}", response_class=HTMLResponse)
async def experiment(
    experiment_key: str, request: Request, op: Annotated[Operator, Require("segment.read")], bo: BO
) -> Response:
    if len(experiment_key) > 64:
        raise InvalidInput("an experiment key has at most 64 characters", field="experiment_key")
    exp = await service.get_experiment(bo, op, experiment_key)
    split = await service.split(bo, op, experiment_key)
    seg = await service.get_segment(bo, op, exp.segment_id)
    return page(request, bo, "experiment.html", op, section="experiments", experiment=exp, split=split, segment=seg)
