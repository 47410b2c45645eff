// Agent live-chat console: one WebSocket to the help desk (frame protocol in schemas/chat.py).
// Lines are keyed by seq, so a replay after a reconnect never shows a line twice; a reply not yet
// acknowledged is resent with the same client_id after a reconnect (the server stores it once).
(function () {
  "use strict";
  const root = document.getElementById("chat-console");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const chats = new Map(); // ticket_id -> {summary, lines: Map(seq -> line), unread}
  const outbox = new Map(); // client_id -> frame, until acked
  let current = null, ws = null, delay = 1000, lastTyping = 0, typingTimer = null, me = null;

  function lastSeq(chat) { let m = 0; for (const s of chat.lines.keys()) m = Math.max(m, s); return m; }
  function send(frame) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame)); }
  function showError(text) { const e = $("chat-error"); e.textContent = text || ""; e.hidden = !text; }

  function renderList() {
    const list = $("chat-list");
    list.replaceChildren();
    for (const [id, chat] of chats) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#" + id;
      a.dataset.ticket = id;
      a.textContent = (chat.summary.subject || "Chat") + " · " + (chat.summary.status || "") + (chat.unread ? " (" + chat.unread + " new)" : "") + (chat.moved ? " · moved to another agent" : "");
      a.className = (id === current ? "active" : "") + (chat.moved ? " moved" : "");
      if (chat.moved) a.dataset.moved = "true";
      a.addEventListener("click", (ev) => { ev.preventDefault(); select(id); });
      li.appendChild(a);
      list.appendChild(li);
    }
  }

  function renderTranscript() {
    const box = $("chat-transcript");
    box.replaceChildren();
    const chat = current && chats.get(current);
    $("chat-title").textContent = chat ? (chat.summary.subject || "Chat") + " — " + current : "No chat selected";
    // A chat reassigned to someone else is shown read-only: its new agent answers it.
    $("chat-body").disabled = $("chat-send").disabled = !chat || !!chat.moved;
    if (chat && chat.moved) $("chat-title").textContent += " (moved to another agent)";
    if (!chat) return;
    const lines = [...chat.lines.values()].sort((a, b) => a.seq - b.seq);
    for (const [, f] of outbox) if (f.ticket_id === current) lines.push({ seq: null, author_kind: "agent", body: f.body, pending: true });
    for (const line of lines) {
      const p = document.createElement("p");
      p.className = "chat-line " + line.author_kind + (line.pending ? " muted" : "");
      p.dataset.author = line.author_kind;
      if (line.seq) p.dataset.seq = line.seq;
      const who = document.createElement("strong");
      who.textContent = line.author_kind === "agent" ? "You: " : line.author_kind === "player" ? "Player: " : "System: ";
      p.append(who, document.createTextNode(line.body));
      box.appendChild(p);
    }
    box.scrollTop = box.scrollHeight;
  }

  function select(id) {
    current = id;
    const chat = chats.get(id);
    if (chat) chat.unread = 0;
    $("chat-typing").hidden = true;
    renderList();
    renderTranscript();
  }

  function addChat(summary, join) {
    const id = summary.ticket_id;
    const known = chats.get(id);
    if (known) {
      known.summary = Object.assign(known.summary, summary);
      if (summary.assignee && summary.assignee === me && known.moved) { known.moved = false; if (join) send({ type: "join", ticket_id: id, after: lastSeq(known) }); }
      renderList(); if (id === current) renderTranscript(); return;
    }
    chats.set(id, { summary: summary, lines: new Map(), unread: 0 });
    if (join) send({ type: "join", ticket_id: id, after: 0 });
    if (!current) select(id); else renderList();
  }

  function onFrame(f) {
    if (f.type === "ready") {
      $("chat-state").textContent = "connected";
      showError("");
      me = f.operator_id;
      for (const c of f.chats) addChat(c, false);
      // Every chat of this page, also those opened before a reconnect: replay what it has not seen.
      for (const [id, chat] of chats) send({ type: "join", ticket_id: id, after: lastSeq(chat) });
      for (const [, frame] of outbox) send(frame);
    } else if (f.type === "chat") {
      addChat(f, true);
    } else if (f.type === "moved") {
      // The chat was reassigned: the new agent gets a "chat" frame; any other console marks it moved.
      const chat = chats.get(f.ticket_id);
      if (!chat) return;
      // Only a chat that was this agent's becomes read-only (a supervisor who joined keeps answering).
      if (chat.summary.assignee === me && f.assignee !== me) chat.moved = true;
      else if (f.assignee === me) chat.moved = false;
      chat.summary.assignee = f.assignee;
      renderList();
      if (f.ticket_id === current) renderTranscript();
    } else if (f.type === "message") {
      const chat = chats.get(f.ticket_id);
      if (!chat || chat.lines.has(f.seq)) return;
      chat.lines.set(f.seq, f);
      if (f.ticket_id === current) { $("chat-typing").hidden = true; renderTranscript(); }
      else { chat.unread += 1; renderList(); }
    } else if (f.type === "ack") {
      const frame = outbox.get(f.client_id);
      outbox.delete(f.client_id);
      const chat = chats.get(f.ticket_id);
      if (chat && frame) chat.lines.set(f.seq, { seq: f.seq, ticket_id: f.ticket_id, author_kind: "agent", body: frame.body, message_id: f.message_id });
      if (f.ticket_id === current) renderTranscript();
    } else if (f.type === "typing") {
      if (f.ticket_id !== current) return;
      $("chat-typing").hidden = false;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { $("chat-typing").hidden = true; }, 4000);
    } else if (f.type === "error") {
      if (f.client_id) { const frame = outbox.get(f.client_id); outbox.delete(f.client_id); if (frame) $("chat-body").value = frame.body; renderTranscript(); }
      showError(f.detail + (f.field ? " (" + f.field + ")" : ""));
    }
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + root.dataset.socket;
    ws = new WebSocket(url);
    ws.onopen = () => { delay = 1000; };
    ws.onmessage = (ev) => { try { onFrame(JSON.parse(ev.data)); } catch (e) { showError(String(e)); } };
    ws.onclose = (ev) => {
      $("chat-state").textContent = "disconnected, reconnecting…";
      if (ev.code === 4401) { showError("Your session ended: log in again."); return; }
      if (ev.code === 4403) { showError(ev.reason || "Not allowed."); return; }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  $("chat-reply").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = $("chat-body").value.trim();
    if (!current || !body) return;
    if (body.length > Number(root.dataset.max)) { showError("At most " + root.dataset.max + " characters."); return; }
    const frame = { type: "message", client_id: crypto.randomUUID(), ticket_id: current, body: body };
    outbox.set(frame.client_id, frame);
    $("chat-body").value = "";
    showError("");
    send(frame);
    renderTranscript();
  });
  $("chat-body").addEventListener("input", () => {
    const now = Date.now();
    if (current && now - lastTyping > 1000) { lastTyping = now; send({ type: "typing", ticket_id: current }); }
  });
  $("chat-join").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("chat-join-id").value.trim();
    if (!id) return;
    $("chat-join-id").value = "";
    if (!chats.has(id)) { chats.set(id, { summary: { ticket_id: id, subject: "Chat" }, lines: new Map(), unread: 0 }); }
    send({ type: "join", ticket_id: id, after: lastSeq(chats.get(id)) });
    select(id);
  });
  connect();
})();
