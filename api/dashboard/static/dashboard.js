// pgqueue dashboard: live refresh by polling, confirmations, relative times. No build step.
(function () {
  "use strict";
  var INTERVAL_MS = 3000;
  var KEY = "pgqueue.live";

  function live() { return localStorage.getItem(KEY) !== "off"; }

  function relative(iso) {
    var s = (Date.now() - Date.parse(iso)) / 1000;
    var future = s < 0; s = Math.abs(s);
    var text = s < 5 ? "just now" : s < 60 ? Math.round(s) + " s" : s < 3600 ? Math.round(s / 60) + " min"
      : s < 86400 ? Math.round(s / 3600) + " h" : Math.round(s / 86400) + " d";
    if (text === "just now") return text;
    return future ? "in " + text : text + " ago";
  }

  function decorate(root) {
    root.querySelectorAll("time[datetime][data-relative]").forEach(function (t) {
      t.textContent = relative(t.getAttribute("datetime"));
    });
  }

  // Confirm destructive actions.
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  function busy() {
    var a = document.activeElement;
    if (a && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName) && a.closest("[data-live-region]")) return true;
    var sel = window.getSelection && window.getSelection();
    return sel && String(sel).length > 0;
  }

  function openDetails(root) {
    var open = {};
    root.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
    return open;
  }

  async function refresh() {
    if (!live() || document.hidden || busy()) return;
    var regions = document.querySelectorAll("[data-live-region]");
    if (!regions.length) return;
    var resp;
    try {
      resp = await fetch(window.location.href, { cache: "no-store", headers: { "X-Dashboard-Refresh": "1" } });
    } catch (e) { setStatus("offline"); return; }
    if (resp.redirected && /\/login/.test(resp.url)) { window.location.href = resp.url; return; }
    if (!resp.ok) { setStatus("offline"); return; }
    setStatus("live");
    var doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    regions.forEach(function (region) {
      var fresh = doc.getElementById(region.id);
      // compared with what the server sent last, not with the DOM (outputs loaded into it since)
      if (region.served === undefined) region.served = region.innerHTML;
      if (!fresh || fresh.innerHTML === region.served) return;
      region.served = fresh.innerHTML;
      var open = openDetails(region);
      region.innerHTML = fresh.innerHTML;
      Object.keys(open).forEach(function (id) {
        var d = document.getElementById(id);
        if (d && d.tagName === "DETAILS") d.open = open[id];
      });
      decorate(region);
      region.querySelectorAll("details[open][data-output-url]").forEach(showOutput);
    });
  }

  function setStatus(state) {
    var btn = document.getElementById("live-toggle");
    if (!btn) return;
    var label = btn.querySelector(".label");
    if (!live()) { btn.classList.add("paused"); label.textContent = "Paused"; return; }
    btn.classList.remove("paused");
    label.textContent = state === "offline" ? "Reconnecting…" : "Live";
  }

  // Waterfall: a span's output is fetched when its row is first opened (and again after a refresh).
  function showOutput(details) {
    var url = details.getAttribute("data-output-url");
    var box = details.querySelector(".wf-output");
    if (!url || !box || box.getAttribute("data-loaded")) return;
    box.setAttribute("data-loaded", "1");
    fetch(url, { cache: "no-store", headers: { "Accept": "application/json" } }).then(function (resp) {
      return resp.json().then(function (body) { return { ok: resp.ok, body: body }; });
    }).then(function (r) {
      box.textContent = "";
      var parts = r.ok ? [["Input", r.body.input], ["Output", r.body.data], ["Error", r.body.error]]
        : [["Error", r.body.error || "could not load the output"]];
      parts.forEach(function (p) {
        if (p[1] === null || p[1] === undefined) return;
        var h = document.createElement("div"); h.className = "k small muted"; h.textContent = p[0];
        var pre = document.createElement("pre"); pre.className = "json" + (p[0] === "Error" ? " error" : "");
        var value = p[1];
        if (typeof value === "string") { try { value = JSON.parse(value); } catch (e) { /* shown as text */ } }
        pre.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
        box.appendChild(h); box.appendChild(pre);
      });
      if (!box.childNodes.length) box.innerHTML = '<span class="muted small">No output.</span>';
    }).catch(function () { box.removeAttribute("data-loaded"); });
  }
  document.addEventListener("toggle", function (ev) {
    var d = ev.target;
    if (d.tagName === "DETAILS" && d.open && d.hasAttribute("data-output-url")) showOutput(d);
  }, true);

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-region]").forEach(function (r) { r.served = r.innerHTML; });
    decorate(document);
    var btn = document.getElementById("live-toggle");
    if (btn) {
      btn.addEventListener("click", function () {
        localStorage.setItem(KEY, live() ? "off" : "on");
        setStatus("live");
        if (live()) refresh();
      });
    }
    setStatus("live");
    setInterval(refresh, INTERVAL_MS);
    setInterval(function () { decorate(document); }, 1000);
  });
})();
