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
      if (!fresh || fresh.innerHTML === region.innerHTML) return;
      var open = openDetails(region);
      region.innerHTML = fresh.innerHTML;
      Object.keys(open).forEach(function (id) {
        var d = document.getElementById(id);
        if (d && d.tagName === "DETAILS") d.open = open[id];
      });
      decorate(region);
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

  document.addEventListener("DOMContentLoaded", function () {
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
