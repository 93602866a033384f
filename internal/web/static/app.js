// Plinth UI: the little behaviour the server-rendered pages need.
// Loaded as a file (the CSP allows no inline script): the CSRF header for
// htmx, the workspace switcher, confirmations, and charts drawn with
// uPlot from the JSON the pages point at.
(function () {
  "use strict";

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

  function xMode(el) {
    var group = el.getAttribute("data-group");
    if (group) {
      var on = document.querySelector('[data-xaxis-group="' + group + '"] [aria-pressed="true"]');
      if (on) return on.getAttribute("data-xaxis");
    }
    return el.getAttribute("data-x") || "step";
  }

  function draw(el, doc) {
    var mode = xMode(el);
    var tables = [];
    var series = [{}];
    (doc.series || []).forEach(function (s, i) {
      var xs = mode === "time" && s.t ? s.t : s.x;
      if (!xs || xs.length === 0) return;
      // uPlot needs x ascending; time and step orders can differ.
      var idx = xs.map(function (_, j) { return j; }).sort(function (a, b) { return xs[a] - xs[b]; });
      tables.push([idx.map(function (j) { return xs[j]; }), idx.map(function (j) { return s.y[j]; })]);
      series.push({ label: s.label, stroke: palette[i % palette.length], width: 2, spanGaps: true, points: { show: xs.length < 60 } });
    });
    var status = el.querySelector(".chart-status");
    if (tables.length === 0) {
      if (status) status.textContent = doc.empty || "No data yet.";
      el.setAttribute("data-drawn", "empty");
      return;
    }
    if (status) status.textContent = "";
    var data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    var box = el.querySelector(".chart-canvas");
    if (el._plot) { el._plot.destroy(); el._plot = null; }
    var width = Math.max(280, (box.clientWidth || el.clientWidth || 600) - 8);
    el._plot = new uPlot({
      width: width,
      height: parseInt(el.getAttribute("data-height") || "240", 10),
      scales: { x: { time: mode === "time" } },
      axes: [{ label: mode === "time" ? "time" : (doc.xlabel || "step") }, { label: doc.ylabel || "" }],
      series: series,
      legend: { show: true }
    }, data, box);
    el.setAttribute("data-drawn", String(tables.length));
  }

  function load(el) {
    var src = el.getAttribute("data-src");
    if (!src) return;
    fetch(src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status + " " + r.statusText); return r.json(); })
      .then(function (doc) { el._doc = doc; draw(el, doc); })
      .catch(function (err) {
        var status = el.querySelector(".chart-status");
        if (status) status.textContent = "Could not load the chart: " + err.message;
        el.setAttribute("data-drawn", "error");
      });
  }

  function initCharts(root) {
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el._init) return;
      el._init = true;
      load(el);
      var every = parseInt(el.getAttribute("data-refresh") || "0", 10);
      if (every > 0) {
        el._timer = setInterval(function () {
          if (!document.body.contains(el)) { clearInterval(el._timer); return; }
          load(el);
        }, every);
      }
    });
  }

  function init(root) {
    root.querySelectorAll("select[data-autosubmit]").forEach(function (s) {
      s.addEventListener("change", function () { s.form.submit(); });
    });
    root.querySelectorAll(".js-hide").forEach(function (b) { b.hidden = true; });
    root.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
    root.querySelectorAll("[data-xaxis-group] button[data-xaxis]").forEach(function (b) {
      b.addEventListener("click", function () {
        var g = b.closest("[data-xaxis-group]");
        g.querySelectorAll("button[data-xaxis]").forEach(function (o) { o.setAttribute("aria-pressed", o === b ? "true" : "false"); });
        document.querySelectorAll('[data-chart][data-group="' + g.getAttribute("data-xaxis-group") + '"]').forEach(function (el) {
          if (el._doc) draw(el, el._doc);
        });
      });
    });
    root.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        document.querySelectorAll('input[name="' + box.getAttribute("data-select-all") + '"]').forEach(function (c) { c.checked = box.checked; });
      });
    });
    initCharts(root);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (e) { init(e.target); });
})();
