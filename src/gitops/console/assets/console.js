// kudo console: live updates over server-sent events, confirmed actions, keyboard help.
// No framework and no build step: this file is embedded in the kudo binary as it is.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const csrf = () => { const m = $('meta[name="kudo-csrf"]'); return m ? m.content : ""; };

  // Theme: light, dark, or the system's (no choice stored).
  const root = document.documentElement;
  const saved = localStorage.getItem("kudo-theme");
  if (saved) root.dataset.theme = saved;
  document.addEventListener("click", (e) => {
    if (e.target.id !== "theme") return;
    const dark = root.dataset.theme ? root.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    root.dataset.theme = dark ? "light" : "dark";
    localStorage.setItem("kudo-theme", root.dataset.theme);
  });

  // Keyboard: "/" searches; arrow keys move between matrix cells.
  document.addEventListener("keydown", (e) => {
    const tag = (e.target.tagName || "").toLowerCase();
    const typing = tag === "input" || tag === "select" || tag === "textarea";
    if (e.key === "/" && !typing) {
      const s = $("#search");
      if (s) { e.preventDefault(); s.focus(); }
      return;
    }
    const cell = e.target.closest && e.target.closest("#matrix td, #matrix th[scope=row]");
    if (!cell || typing) return;
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    const m = moves[e.key];
    if (!m) return;
    const row = cell.parentElement;
    const rows = Array.from(row.parentElement.children);
    const r = rows.indexOf(row) + m[0];
    const c = Array.from(row.children).indexOf(cell) + m[1];
    const target = rows[r] && rows[r].children[c];
    if (!target) return;
    e.preventDefault();
    const focusable = target.querySelector("a") || target;
    if (!focusable.hasAttribute("href")) focusable.tabIndex = -1;
    focusable.focus();
  });

  function toast(text, bad) {
    const t = $("#toast");
    if (!t) return;
    t.textContent = text;
    t.className = bad ? "bad" : "good";
  }

  // Replaces the page's content with a fresh copy (after an action or a change the event
  // stream announced). Never polls: only events and actions call it.
  let refreshing = null;
  function refreshMain() {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      try {
        const res = await fetch(location.href, { credentials: "same-origin" });
        if (new URL(res.url).pathname === "/login") { location.assign(res.url); return; }
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const fresh = doc.getElementById("main");
        const main = $("#main");
        if (fresh && main) main.innerHTML = fresh.innerHTML;
      } catch (err) {
        // The stream's reconnect will refresh again.
      } finally {
        refreshing = null;
      }
    }, 150);
  }

  function statusClass(s) { return "st-" + s.toLowerCase().replace(/_/g, "-"); }

  function applyMatrix(u) {
    if (u.layout) { refreshMain(); return; }
    for (const [id, cell] of Object.entries(u.cells || {})) {
      const td = document.getElementById("cell:" + id);
      if (!td) continue;
      td.className = statusClass(cell.status);
      td.dataset.status = cell.status;
      const set = (sel, text) => { const el = td.querySelector(sel); if (el) el.textContent = text; };
      set(".status", cell.status.replace(/_/g, " "));
      set(".plan", cell.plan || "");
      set(".steps", cell.total > 0 ? cell.done + "/" + cell.total : "");
      set(".rev", (cell.revision ? cell.revision.slice(0, 7) : "") +
        (!cell.current && cell.status !== "NOT_APPLIED" ? " (older spec)" : ""));
      const a = td.querySelector("a");
      if (a) a.title = cell.message || "";
    }
    for (const c of u.clusters || []) {
      const row = document.getElementById("row:" + c.name);
      const th = row && row.querySelector("th");
      if (!th) continue;
      th.className = c.up ? "up" : "down";
      const b = th.querySelector(".badge");
      b.className = "badge " + (c.up ? "st-up" : "st-down");
      b.textContent = c.up ? "up" : "down";
      th.querySelector(".reason").textContent = c.reason || "";
    }
    for (const i of u.instances || []) {
      const th = document.getElementById("col:" + i.namespace + "/" + i.name);
      const r = th && th.querySelector(".rollout");
      if (r) r.textContent = i.rollout;
    }
    const counts = $("#counts");
    if (counts && u.counts) {
      counts.replaceChildren(...u.counts.map(([s, n]) => {
        const li = document.createElement("li");
        li.dataset.status = s;
        const b = document.createElement("span");
        b.className = "badge " + statusClass(s);
        b.textContent = s.replace(/_/g, " ");
        const strong = document.createElement("b");
        strong.textContent = String(n);
        li.append(b, " ", strong);
        return li;
      }));
    }
  }

  // The event stream. EventSource reconnects by itself after a dropped connection; when the
  // server refused it (a restart lost the session, say) it is recreated here.
  const live = $("#live");
  const say = (state, text) => { if (live) { live.dataset.state = state; live.textContent = text; } };
  let server = null;
  let source = null;
  function connect() {
    const url = ($('meta[name="kudo-events"]') || {}).content;
    if (!url) { say("off", ""); return; }
    source = new EventSource(url);
    source.addEventListener("open", () => say("live", "live"));
    source.addEventListener("hello", (e) => {
      const id = JSON.parse(e.data).server;
      if (server && server !== id) refreshMain();
      server = id;
      say("live", "live");
    });
    source.addEventListener("matrix", (e) => applyMatrix(JSON.parse(e.data)));
    source.addEventListener("changed", () => refreshMain());
    source.addEventListener("error", () => {
      say("reconnecting", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(async () => {
          try {
            const res = await fetch("/api/v1/session", { credentials: "same-origin" });
            if (res.status === 401) {
              location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
              return;
            }
          } catch (err) { /* still down: try again */ }
          connect();
        }, 1000);
      }
    });
  }
  connect();

  // Actions: confirmed in a dialog, then posted with the session's CSRF token.
  const dialog = $("#confirm");
  document.addEventListener("click", (e) => {
    const btn = e.target.closest && e.target.closest("button.action");
    if (!btn || btn.disabled) return;
    $("#confirm-text").textContent = btn.dataset.confirm || "Are you sure?";
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "ok") { toast("Nothing done."); return; }
      let body = btn.dataset.body || "{}";
      if (btn.dataset.planFrom) {
        const sel = btn.closest("form").querySelector("select[name=" + btn.dataset.planFrom + "]");
        body = JSON.stringify({ plan: sel ? sel.value : "" });
      }
      try {
        const res = await fetch(btn.dataset.url, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-Kudo-Csrf": csrf() },
          body,
        });
        let text = (await res.text()).trim();
        try {
          const j = JSON.parse(text);
          text = j.result || j.reason || Object.entries(j).map(([k, v]) => k + ": " + v).join(", ");
        } catch (err) { /* plain text */ }
        toast((res.ok ? "Done: " : "Refused (" + res.status + "): ") + text, !res.ok);
        if (res.ok) refreshMain();
      } catch (err) {
        toast("The request failed: " + err, true);
      }
    };
    dialog.showModal();
  });
})();
