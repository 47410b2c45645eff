// Ticket pages: SLA countdowns ticking client-side from the due time the server computed, the
// agent's presence heartbeat (so an agent working the queue stays available to the routing), and
// attachment uploads straight to the help-desk API (the dashboard's own body limit is small).
(function () {
  "use strict";
  const csrf = (() => {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || ""; }
    catch (e) { return ""; }
  })();

  function span(seconds) {
    const s = Math.abs(Math.trunc(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (h ? h + "h " + two(m) + "m " : m ? m + "m " : "") + two(r) + "s";
  }

  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-due]")) {
      const due = Date.parse(el.dataset.due);
      if (Number.isNaN(due)) continue;
      const warn = el.dataset.warn ? Date.parse(el.dataset.warn) : NaN;
      const left = (due - now) / 1000;
      const what = (el.dataset.target || "").replace(/_/g, " ");
      el.textContent = left >= 0 ? what + " in " + span(left) : what + " overdue " + span(left);
      el.classList.toggle("breached", left < 0);
      el.classList.toggle("bad", left < 0);
      el.classList.toggle("warning", left >= 0 && !Number.isNaN(warn) && now >= warn);
      el.classList.toggle("ok", left >= 0 && !(now >= warn));
    }
  }
  if (document.querySelector("[data-due]")) { tick(); setInterval(tick, 1000); }

  const presence = document.getElementById("presence");
  if (presence) {
    const KEY = "pitboss.presence";
    presence.value = localStorage.getItem(KEY) || "available";
    const state = document.getElementById("presence-state");
    async function beat() {
      try {
        const r = await fetch(presence.dataset.presenceUrl, {
          method: "PUT", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify({ status: presence.value }),
        });
        const body = await r.json();
        if (state) state.textContent = r.ok ? body.status + " · teams " + body.teams.join(", ") + " · " + body.load + " active" : (body.detail || "presence not saved");
      } catch (e) { if (state) state.textContent = "offline (network)"; }
    }
    presence.addEventListener("change", () => { localStorage.setItem(KEY, presence.value); beat(); });
    beat();
    setInterval(beat, 30000);
  }

  // A reply template rendered by the templates fragment becomes the reply's text, to edit and send.
  document.body.addEventListener("htmx:afterSwap", (ev) => {
    const text = ev.target && ev.target.querySelector && ev.target.querySelector("[data-testid=template-text]");
    const reply = document.getElementById("reply-body");
    if (text && reply) reply.value = text.value;
  });

  const upload = document.getElementById("upload");
  if (upload) {
    upload.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const error = document.getElementById("upload-error");
      error.hidden = true;
      const r = await fetch(upload.dataset.url, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf }, body: new FormData(upload),
      });
      if (r.ok) { location.reload(); return; }
      let detail = "upload refused (" + r.status + ")";
      try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
      error.textContent = detail;
      error.hidden = false;
    });
  }
})();
