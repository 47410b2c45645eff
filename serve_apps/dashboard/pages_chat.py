"""Dashboard pages: the agents' live-chat console. The page is a shell: `static/chat.js` opens the
agent's socket (`/helpdesk/v1/chat/agent`, same origin through Serve's proxy), lists the chats the
socket reports, shows a transcript, sends replies and typing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from serve_apps.backoffice.deps import BO, Operator, Require
from serve_apps.dashboard.render import page

router = APIRouter()
SOCKET = "/helpdesk/v1/chat/agent"


@router.get("/chat", response_class=HTMLResponse)
async def chat_console(request: Request, op: Annotated[Operator, Require("ticket.write")], bo: BO) -> HTMLResponse:
    return page(request, bo, "chat.html", op, section="chat", socket=SOCKET,
                max_chars=bo.settings.chat_max_message_chars)
