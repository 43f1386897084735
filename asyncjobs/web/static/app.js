// The dashboard's only script: live counters, select-all, confirmations. No build step.
"use strict";
(function () {
  // Buttons with data-confirm ask first; data-needs-selection wants a ticked row.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button");
    if (!b) return;
    if (b.hasAttribute("data-needs-selection")) {
      var form = b.form;
      if (form && !form.querySelector("input[name=jid]:checked")) {
        ev.preventDefault();
        alert("Select at least one job first.");
        return;
      }
    }
    var msg = b.getAttribute("data-confirm");
    if (msg && !confirm(msg)) ev.preventDefault();
  });
  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.hasAttribute && t.hasAttribute("data-select-all")) {
      var boxes = t.form.querySelectorAll("input[name=jid]");
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = t.checked;
    }
  });

  // Live parts: the overview's counters, polled from stats.json (rates from successive
  // readings), and regions marked data-refresh, swapped for the same region of the page
  // fetched anew. One pause for all, remembered across pages.
  var live = document.getElementById("live");
  var regions = document.querySelectorAll("[data-refresh]");
  var toggle = document.getElementById("live-toggle");
  if (!live && !regions.length) return;
  var every = parseFloat(document.body.getAttribute("data-poll")) || 3;
  var paused = false, last = null, timer = null;
  try { paused = localStorage.getItem("asyncjobs.paused") === "1"; } catch (e) {}
  function show(data) {
    var cells = live.querySelectorAll("[data-stat]");
    for (var i = 0; i < cells.length; i++) {
      var k = cells[i].getAttribute("data-stat");
      if (k in data) cells[i].textContent = data[k];
    }
    if (last) {
      var dt = data.time - last.time;
      ["processed", "failed"].forEach(function (k) {
        var el = live.querySelector("[data-rate=" + k + "]");
        if (el && dt > 0) el.textContent = (Math.max(0, data[k] - last[k]) / dt).toFixed(1);
      });
    }
    last = data;
  }
  function get(url, as) {
    return fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r[as]() : null; })
      .catch(function () { return null; });
  }
  function tick() {
    var work = [];
    if (live) work.push(get(live.getAttribute("data-src"), "json").then(function (d) { if (d) show(d); }));
    if (regions.length) work.push(get(location.href, "text").then(function (html) {
      if (!html) return;
      var doc = new DOMParser().parseFromString(html, "text/html");
      for (var i = 0; i < regions.length; i++) {
        var fresh = doc.getElementById(regions[i].id);
        if (fresh) regions[i].innerHTML = fresh.innerHTML;
      }
    }));
    Promise.all(work).finally(function () {
      clearTimeout(timer);
      if (!paused) timer = setTimeout(tick, every * 1000);
    });
  }
  function label() {
    if (!toggle) return;
    toggle.textContent = paused ? "Resume live" : "Pause live";
    toggle.setAttribute("aria-pressed", String(paused));
  }
  if (toggle) toggle.addEventListener("click", function () {
    paused = !paused;
    try { localStorage.setItem("asyncjobs.paused", paused ? "1" : "0"); } catch (e) {}
    label();
    clearTimeout(timer);
    if (!paused) tick();
  });
  label();
  if (live) tick();  // the first reading, for the rates, even when paused
  else if (!paused) timer = setTimeout(tick, every * 1000);
})();
