// Tether console: the little the pages need from a script. Served by the hub
// itself (CSP: script-src 'self'); no inline script anywhere, no dependencies.
"use strict";

(function () {
  const MINUTE = 60e3, HOUR = 60 * MINUTE, DAY = 24 * HOUR;

  // "3 min ago", "in 2 h": for times near now; the exact local time is the title.
  function relative(date) {
    const delta = date.getTime() - Date.now();
    const size = Math.abs(delta);
    let text;
    if (size < MINUTE) text = Math.round(size / 1e3) + " s";
    else if (size < HOUR) text = Math.round(size / MINUTE) + " min";
    else if (size < DAY) text = Math.round(size / HOUR) + " h";
    else text = Math.round(size / DAY) + " d";
    return delta < 0 ? text + " ago" : "in " + text;
  }

  // Every <time datetime="ISO"> in the browser's time zone.
  function showTimes() {
    for (const el of document.querySelectorAll("time[datetime]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) continue;
      const local = date.toLocaleString();
      el.title = local;
      const near = Math.abs(date.getTime() - Date.now()) < DAY;
      el.textContent = el.hasAttribute("data-relative") || near ? relative(date) : local;
    }
  }

  // A running try's log: new text arrives as server-sent events until the try ends.
  function followLog() {
    const pre = document.getElementById("log");
    if (!pre || !pre.dataset.stream) return;
    const status = document.getElementById("log-status");
    const say = (text) => { if (status) status.textContent = text; };
    const source = new EventSource(pre.dataset.stream);
    source.addEventListener("log", (event) => {
      const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      pre.append(document.createTextNode(JSON.parse(event.data)));
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    });
    source.addEventListener("end", () => {
      source.close();
      say("The try has ended; loading its whole log…");
      window.setTimeout(() => window.location.reload(), 500);
    });
    source.addEventListener("gone", (event) => {
      source.close();
      say(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) say("The live log stopped; reload to follow it again.");
      else say("Reconnecting…");
    });
    source.addEventListener("open", () => say("Following live…"));
  }

  // The hub prints /ui/login#token=...: the fragment never reaches a server.
  // The token is filled in, not sent: a link from elsewhere must not sign the
  // browser in under someone else's token without its user pressing Sign in.
  function tokenFromFragment() {
    const form = document.getElementById("login-form");
    if (!form) return;
    const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
    if (!token) return;
    history.replaceState(null, "", window.location.pathname + window.location.search);
    document.getElementById("token").value = token;
    document.getElementById("from-link").hidden = false;
    form.querySelector("button[type=submit]").focus();
  }

  function autosubmit() {
    for (const el of document.querySelectorAll("[data-autosubmit]")) {
      el.addEventListener("change", () => el.form.submit());
    }
  }

  // The region marked data-refresh="SECONDS" (grid, workers, queues) is drawn
  // again from the same page, fetched afresh, while the tab is visible; not
  // while a field in it has the focus. A session that ended shows the login page.
  function autoRefresh() {
    const first = document.querySelector("[data-refresh][id]");
    if (!first) return;
    const id = first.id;
    const every = Math.max(2, Number(first.dataset.refresh) || 5) * 1e3;
    let timer = null;
    const visible = () => document.visibilityState === "visible";
    const schedule = () => {
      if (timer === null && visible()) timer = window.setTimeout(refresh, every);
    };
    async function refresh() {
      timer = null;
      const region = document.getElementById(id);
      const active = document.activeElement;
      if (!region || !visible()) return;
      if (active && region.contains(active) && active.matches("input, textarea, select")) {
        schedule();
        return;
      }
      try {
        const answer = await fetch(window.location.href, { cache: "no-store", credentials: "same-origin" });
        if (answer.redirected) { window.location.reload(); return; }
        if (answer.ok) {
          const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById(id);
          if (fresh) {
            // A wide grid or graph scrolls in a box of its own: keep where it was.
            const boxes = ".grid-wrap, .graph-wrap";
            const kept = [...document.getElementById(id).querySelectorAll(boxes)]
              .map((el) => [el.scrollLeft, el.scrollTop]);
            document.getElementById(id).replaceWith(document.adoptNode(fresh));
            fresh.querySelectorAll(boxes).forEach((el, i) => {
              if (kept[i]) [el.scrollLeft, el.scrollTop] = kept[i];
            });
            showTimes();
          }
        }
      } catch (_) {
        // The hub is away for a moment: ask again at the next turn.
      }
      schedule();
    }
    document.addEventListener("visibilitychange", () => {
      if (timer !== null) { window.clearTimeout(timer); timer = null; }
      if (visible()) refresh();
    });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", () => {
    showTimes();
    window.setInterval(showTimes, 30e3);
    followLog();
    tokenFromFragment();
    autosubmit();
    autoRefresh();
  });
})();
