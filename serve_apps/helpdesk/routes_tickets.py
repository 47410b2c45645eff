"""Help desk: tickets, attachments, a player's communication history, agents' presence (`/helpdesk/v1`).

Agents use their back-office session (state-changing requests send `X-CSRF-Token`); the casino
platform opens tickets and writes players' replies on their behalf with its brand's API key
(`Authorization: Bearer`) under `/platform/...`. Every error is application/problem+json.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from domain.errors import InvalidInput
from schemas.helpdesk_routing import AgentPublic, PresenceUpdate, TeamName
from schemas.tickets import (
    MAX_ATTACHMENT_BYTES,
    AttachmentMeta,
    MessageCreate,
    MessagePublic,
    PlayerCandidate,
    Status,
    TicketCreate,
    TicketPlayerLink,
    TicketPublic,
    TicketUpdate,
)
from serve_apps.backoffice.deps import BrandKey, Operator, Require
from serve_apps.helpdesk.service import HD, Actor, HistoryPage, QueuePage, TicketView

router = APIRouter(tags=["tickets"])




def _platform(brand: str) -> Actor:
    # The platform speaks for its players: their replies, never an agent's or an internal note.
    return Actor("system", "platform", brand=brand)


def _created(ticket: TicketPublic, created: bool) -> JSONResponse:
    return JSONResponse(ticket.model_dump(mode="json"), status_code=201 if created else 200)


# ---------------------------------------------------------------------------- agents


@router.post("/tickets", status_code=201, response_model=TicketPublic,
             summary="Open a ticket (an agent, e.g. for a phone or walk-in request); a retry returns the first")
async def create_ticket(body: TicketCreate, op: Annotated[Operator, Require("ticket.write")], hd: HD) -> JSONResponse:
    return _created(*await hd.create_ticket(body, Actor.agent(op)))


@router.get("/tickets", summary="The queue: tickets newest first, with SLA status; filters and cursor")
async def list_tickets(
    op: Annotated[Operator, Require("ticket.read")],
    hd: HD,
    status: Annotated[list[Status] | None, Query(description="Repeat for several; default: the active ones")] = None,
    brand: Annotated[str | None, Query(max_length=64)] = None,
    team: Annotated[TeamName | None, Query()] = None,
    assignee: Annotated[str | None, Query(max_length=128, description="operator id")] = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> QueuePage:
    kwargs: dict[str, Any] = {"statuses": status} if status else {}
    return await hd.queue(Actor.agent(op), brand=brand, team=team, assignee=assignee, cursor=cursor, limit=limit,
                          **kwargs)


@router.get("/tickets/{ticket_id}", summary="A ticket with its messages, attachments and SLA status")
async def get_ticket(ticket_id: UUID, op: Annotated[Operator, Require("ticket.read")], hd: HD) -> TicketView:
    return await hd.get_ticket(ticket_id, Actor.agent(op))


@router.patch("/tickets/{ticket_id}", summary="Change status, priority, category, team, assignee or tags")
async def update_ticket(ticket_id: UUID, body: TicketUpdate, op: Annotated[Operator, Require("ticket.write")],
                        hd: HD) -> TicketPublic:
    return await hd.update_ticket(ticket_id, body, Actor.agent(op))


@router.post("/tickets/{ticket_id}/player",
             summary="Link a ticket without a player (an email from an unknown address) to a player; a retry "
                     "with the same player returns the ticket")
async def link_player(ticket_id: UUID, body: TicketPlayerLink, op: Annotated[Operator, Require("ticket.write")],
                      hd: HD) -> TicketPublic:
    return await hd.link_player(ticket_id, body, Actor.agent(op))


@router.get("/tickets/{ticket_id}/player-candidates",
            summary="Players whose live profile has an unlinked ticket's sender address (to link one)")
async def player_candidates(ticket_id: UUID, op: Annotated[Operator, Require("ticket.write")],
                            hd: HD) -> list[PlayerCandidate]:
    return await hd.player_candidates(ticket_id, Actor.agent(op))


@router.post("/tickets/{ticket_id}/messages", status_code=201,
             summary="A public reply or an internal note (`visibility: internal`); a retry returns the first")
async def add_message(ticket_id: UUID, body: MessageCreate, op: Annotated[Operator, Require("ticket.write")],
                      hd: HD) -> MessagePublic:
    return await hd.add_message(ticket_id, body, Actor.agent(op))


@router.post("/tickets/{ticket_id}/attachments", status_code=201,
             summary="Upload a file (png, jpeg, gif, webp, pdf, txt, csv; at most 10 MiB); a message then names it")
async def upload_attachment(
    ticket_id: UUID,
    op: Annotated[Operator, Require("ticket.write")],
    hd: HD,
    file: Annotated[UploadFile, File(description="the file; its declared type must match its name and content")],
    attachment_id: Annotated[UUID | None, Form(description="idempotency key; a new id when left out")] = None,
) -> JSONResponse:
    data = await file.read(MAX_ATTACHMENT_BYTES + 1)
    meta, created = await hd.upload_attachment(ticket_id, attachment_id or uuid4(), file.filename or "",
                                               file.content_type or "", data, Actor.agent(op))
    return JSONResponse(meta.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/tickets/{ticket_id}/attachments/{attachment_id}", summary="Download an attachment",
            response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
async def download_attachment(ticket_id: UUID, attachment_id: UUID, op: Annotated[Operator, Require("ticket.read")],
                              hd: HD) -> Response:
    meta, data = await hd.get_attachment(ticket_id, attachment_id, Actor.agent(op))
    return attachment_response(meta, data)


def attachment_response(meta: AttachmentMeta, data: bytes) -> Response:
    # Always a download, never rendered inline: an uploaded file must not run in our origin.
    quoted = meta.filename.replace('"', "_")
    return Response(data, media_type=meta.content_type, headers={
        "Content-Disposition": f'attachment; filename="{quoted}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    })


@router.get("/players/{player_id}/history",
            summary="A player's communication history: tickets, messages, chats, emails, calls; newest first")
async def player_history(
    player_id: UUID,
    op: Annotated[Operator, Require("ticket.read")],
    hd: HD,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HistoryPage:
    return await hd.player_history(player_id, Actor.agent(op), cursor, limit)


@router.put("/agents/me/presence", summary="Set (or refresh, as a heartbeat) one's presence and teams")
async def set_presence(body: PresenceUpdate, op: Annotated[Operator, Require("ticket.write")], hd: HD) -> AgentPublic:
    return await hd.set_presence(op, body)


@router.get("/agents", summary="Agents online: presence, teams and load (active tickets assigned)")
async def list_agents(op: Annotated[Operator, Require("ticket.assign")], hd: HD,
                      team: Annotated[TeamName | None, Query()] = None) -> list[AgentPublic]:
    return await hd.agents(team)


# ---------------------------------------------------------------------------- the platform (brand API key)


@router.post("/platform/tickets", status_code=201, response_model=TicketPublic,
             summary="Open a ticket on a player's behalf (the casino platform); a retry returns the first")
async def platform_create_ticket(body: TicketCreate, brand: BrandKey, hd: HD) -> JSONResponse:
    if body.player_id is None:
        raise InvalidInput("the platform opens tickets for a player", field="player_id")
    return _created(*await hd.create_ticket(body, _platform(brand)))


@router.get("/platform/tickets/{ticket_id}", summary="A ticket as its player sees it (no internal notes)")
async def platform_get_ticket(ticket_id: UUID, brand: BrandKey, hd: HD) -> TicketView:
    return await hd.get_ticket(ticket_id, _platform(brand))


@router.post("/platform/tickets/{ticket_id}/messages", status_code=201,
             summary="The player's reply, written by the platform (`author_kind: player`)")
async def platform_add_message(ticket_id: UUID, body: MessageCreate, brand: BrandKey, hd: HD) -> MessagePublic:
    return await hd.add_message(ticket_id, body, _platform(brand))


@router.get("/platform/players/{player_id}/history", summary="A player's history as they see it (public items)")
async def platform_player_history(
    player_id: UUID,
    brand: BrandKey,
    hd: HD,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HistoryPage:
    return await hd.player_history(player_id, _platform(brand), cursor, limit)
