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

  // The overview's counters: polled from stats.json; rates from successive readings.
  var live = document.getElementById("live");
  if (!live) return;
  var every = parseFloat(document.body.getAttribute("data-poll")) || 3;
  var toggle = document.getElementById("live-toggle");
  var paused = false, last = null, timer = null;
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
  function poll() {
    fetch(live.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) show(d); })
      .catch(function () {})
      .finally(function () { if (!paused) timer = setTimeout(poll, every * 1000); });
  }
  if (toggle) toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.textContent = paused ? "Resume live" : "Pause live";
    toggle.setAttribute("aria-pressed", String(paused));
    if (!paused) { clearTimeout(timer); poll(); } else clearTimeout(timer);
  });
  poll();
})();
