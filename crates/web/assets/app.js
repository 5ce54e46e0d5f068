// Small behaviours of the pages: charts, seeking the player, copy buttons,
// adding and removing editor rows, confirmations. Everything works without
// it except these conveniences.
(function () {
  "use strict";

  var RU_DATES = {
    MMMM: ["январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь", "октябрь", "ноябрь", "декабрь"],
    MMM: ["янв", "фев", "мар", "апр", "май", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"],
    WWWW: ["воскресенье", "понедельник", "вторник", "среда", "четверг", "пятница", "суббота"],
    WWW: ["вс", "пн", "вт", "ср", "чт", "пт", "сб"],
  };

  function drawCharts(root) {
    if (typeof uPlot === "undefined") return;
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) return;
      el.dataset.drawn = "1";
      var data;
      try { data = JSON.parse(el.dataset.chart); } catch (e) { return; }
      if (!data.days || data.days.length === 0) {
        el.textContent = "Нет данных за период.";
        el.classList.add("muted");
        return;
      }
      var width = Math.max(320, el.clientWidth || 800);
      var opts = {
        width: width,
        height: 260,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), data.tz || "Europe/Moscow"); },
        fmtDate: function (tpl) { return uPlot.fmtDate(tpl, RU_DATES); },
        series: [
          { label: "День", value: "{DD}.{MM}.{YYYY}" },
          { label: "Звонков", stroke: "#1f4e79", fill: "rgba(31,78,121,0.12)", scale: "calls",
            paths: uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined },
          { label: "Средняя оценка, %", stroke: "#c2571a", width: 2, scale: "pct", spanGaps: true },
        ],
        scales: { x: { time: true, range: [data.from, data.to] },
                  calls: { range: function (u, min, max) { return [0, Math.max(1, max)]; } },
                  pct: { range: [0, 100] } },
        axes: [
          { values: [
            // [tick step, label, and on a new year, month, day …] (uPlot's format)
            [3600 * 24 * 365, "{YYYY}", null, null, null, null, null, null, 1],
            [3600 * 24 * 28, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
            [3600 * 24, "{D}.{MM}", "\n{YYYY}", null, null, null, null, null, 1],
            [3600, "{H}:{mm}", "\n{D}.{MM}.{YYYY}", null, "\n{D}.{MM}", null, null, null, 1],
          ] },
          { scale: "calls", label: "звонков" },
          { scale: "pct", side: 1, label: "%", grid: { show: false } },
        ],
      };
      new uPlot(opts, [data.days, data.calls, data.average], el);
    });
  }

  function player() { return document.getElementById("player"); }

  document.addEventListener("click", function (event) {
    var seek = event.target.closest("[data-seek]");
    if (seek) {
      var audio = player();
      if (audio) {
        audio.currentTime = parseFloat(seek.dataset.seek) || 0;
        audio.play().catch(function () {});
      }
      return;
    }
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var field = document.getElementById(copy.dataset.copy);
      if (!field) return;
      field.select();
      var done = function () { copy.textContent = "Скопировано"; setTimeout(function () { copy.textContent = "Копировать"; }, 2000); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
      return;
    }
    var add = event.target.closest(".add-row");
    if (add) {
      var template = document.getElementById(add.dataset.template);
      var into = document.getElementById(add.dataset.into);
      if (template && into) into.appendChild(template.content.cloneNode(true));
      return;
    }
    var remove = event.target.closest(".remove-row");
    if (remove) {
      var row = remove.closest(".row");
      if (row && row.parentElement.querySelectorAll(".row").length > 1) row.remove();
      else if (row) row.querySelectorAll("input:not([type=hidden]), textarea").forEach(function (f) { f.value = ""; });
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // Highlight the transcript line being played.
  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    var audio = player();
    if (!audio) return;
    var lines = Array.prototype.slice.call(document.querySelectorAll(".transcript .line"));
    audio.addEventListener("timeupdate", function () {
      var t = audio.currentTime, current = null;
      lines.forEach(function (line) {
        var start = parseFloat(line.querySelector("[data-seek]").dataset.seek);
        if (start <= t) current = line;
      });
      lines.forEach(function (line) { line.classList.toggle("playing", line === current); });
    });
  });
  document.addEventListener("htmx:afterSwap", function (event) { drawCharts(event.target); });
})();
