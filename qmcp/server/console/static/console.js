// qmcp console: live updates over the execution's Server-Sent Events, the running step's text as it
// is written, step selection without reloading, and a list that refreshes while runs are active.
// Everything here is an enhancement: every page and form works without it.
"use strict";

(function () {
  const body = document.body;

  function fetchHtml(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } }).then(function (r) {
      if (!r.ok) throw new Error(url + ": " + r.status);
      return r.text();
    });
  }

  // -- the executions list: refresh the rows while some run ------------------------------------------
  function watchList() {
    const rows = document.getElementById("execution-rows");
    if (!rows) return;
    setInterval(function () {
      if (rows.dataset.live !== "yes" && !document.hasFocus()) return;
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "rows");
      fetchHtml(url.toString()).then(function (html) {
        rows.innerHTML = html;
        rows.dataset.live = /data-status="(pending|running|paused)"/.test(html) ? "yes" : "no";
      }).catch(function () {});
    }, 2000);
  }

  // -- one execution -----------------------------------------------------------------------------------
  function watchExecution(id) {
    const live = document.getElementById("live");
    const panel = document.getElementById("panel");
    let follow = body.dataset.follow === "yes";
    let shown = new URLSearchParams(window.location.search).get("step");
    let pending = null;
    let clockOffset = 0;

    function syncClock() {
      const svg = live.querySelector("svg.timeline");
      if (svg && svg.dataset.now) clockOffset = Number(svg.dataset.now) - Date.now();
    }

    // What the page shows already, so that the stream's replay of it on connecting changes nothing
    // (and a form being filled in is not swapped away).
    function shownStatus() {
      const summary = document.getElementById("summary");
      return summary ? summary.dataset.status : "";
    }
    function stepsShown(selector) {
      const keys = new Set();
      live.querySelectorAll(selector).forEach(function (g) { keys.add(g.dataset.key); });
      return keys;
    }
    function finishedSteps() {  // a fork's inherited steps are in the table, not on the timeline
      return stepsShown("svg.timeline g.bar.s-completed, svg.timeline g.bar.s-failed, .steps-table [data-mark]");
    }
    let known = finishedSteps();
    let running = stepsShown("svg.timeline g.bar.s-running");

    function refresh() {
      pending = null;
      live.setAttribute("aria-busy", "true");
      return fetchHtml("/executions/" + id + "/live").then(function (html) {
        live.innerHTML = html;
        live.setAttribute("aria-busy", "false");
        known = finishedSteps();
        running = stepsShown("svg.timeline g.bar.s-running");
        syncClock();
      }).catch(function () { live.setAttribute("aria-busy", "false"); });
    }

    function soon() {
      if (pending === null) pending = setTimeout(refresh, 300);
    }

    function showStep(key, focus) {
      shown = key;
      return fetchHtml("/executions/" + id + "/panel?step=" + encodeURIComponent(key)).then(function (html) {
        panel.innerHTML = html;
        if (focus) panel.focus();
      });
    }

    // Running bars grow between updates.
    syncClock();
    setInterval(function () {
      const svg = live.querySelector("svg.timeline");
      if (!svg) return;
      const t0 = Number(svg.dataset.t0), scale = Number(svg.dataset.scale);
      const left = Number(svg.dataset.left), max = Number(svg.dataset.max);
      const now = Date.now() + clockOffset;
      svg.querySelectorAll("rect[data-start]").forEach(function (rect) {
        const x = left + (Number(rect.dataset.start) - t0) * scale;
        const width = Math.max(3, Math.min((now - Number(rect.dataset.start)) * scale, left + max - x));
        rect.setAttribute("width", width.toFixed(1));
      });
    }, 200);

    // Selecting a step (diagram node, timeline bar, table row) shows it in the panel.
    document.addEventListener("click", function (event) {
      const link = event.target.closest && event.target.closest("a[href]");
      if (!link) return;
      const href = link.getAttribute("href") || link.getAttribute("xlink:href");
      const url = new URL(href, window.location.href);
      if (url.pathname !== "/executions/" + id || !url.searchParams.get("step")) return;
      event.preventDefault();
      follow = false;
      history.replaceState(null, "", url.pathname + url.search);
      showStep(url.searchParams.get("step"), true);
    });

    // A dropped stream reconnects by itself, sending the id of the last event it had (Last-Event-ID): the
    // server goes on from there, deltas included. When it cannot, it says `reset` and sends the stream
    // from its beginning: the page is then drawn again from the server.
    if (!window.EventSource) return;
    const source = new EventSource("/v1/executions/" + id + "/events");
    source.addEventListener("reset", function () {
      refresh();
      if (shown) showStep(shown, false);
    });
    source.addEventListener("step", function (event) {
      const data = JSON.parse(event.data);
      const settled = data.kind === "completed" || data.kind === "failed" || data.kind === "replayed";
      if (settled && known.has(data.key)) return;  // the page shows it already
      if (data.kind === "started" && follow) showStep(data.key, false);
      else if (data.key === shown && data.kind !== "started") showStep(data.key, false);
      if (data.kind === "started" && running.has(data.key)) return;  // its bar runs already
      soon();
    });
    source.addEventListener("delta", function (event) {
      const data = JSON.parse(event.data);
      const target = panel.querySelector('[data-stream-key="' + CSS.escape(data.key) + '"]');
      if (target) target.appendChild(document.createTextNode(data.text));
      else if (follow && shown !== data.key) showStep(data.key, false);
    });
    source.addEventListener("status", function (event) {
      if (JSON.parse(event.data).status !== shownStatus()) soon();
    });
    source.addEventListener("end", function (event) {
      source.close();
      if (JSON.parse(event.data).status === shownStatus() && pending === null) return;
      refresh();
      if (shown) showStep(shown, false);
    });
    source.onerror = function () {  // CONNECTING: it reconnects after the server's `retry:`; CLOSED: it gave up
      if (source.readyState === EventSource.CLOSED) soon();
    };
  }

  // -- a running eval: its page is read again every few seconds, until the eval stops -------------------
  function watchEval() {
    if (body.dataset.live !== "yes") return;
    setTimeout(function () { window.location.reload(); }, 5000);
  }

  if (body.dataset.page === "executions") watchList();
  if (body.dataset.page === "execution") watchExecution(body.dataset.execution);
  if (body.dataset.page === "eval") watchEval();
})();
