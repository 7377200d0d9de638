// The charts: cumulative good days against the pace and the target, and the sites'
// concentrations against the daily limits. Real axes: dated x ticks, y in days or µg/m³.

/** Month ticks (the 1st of each month) over a period of days from..to, placed by `X(index)`. */
function monthTicks(from, to, X, short) {
  const ticks = [];
  for (const first of monthsOf(from, to)) {
    const date = first < from ? from : first;
    const m = dateOf(first).getUTCMonth();
    const label = short ? (m + 1) + "月" : (m + 1) + "月 " + MONTH_SHORT[m];
    ticks.push({ at: X(daysBetween(from, date)), label: first < from ? date.slice(5) : label, value: date, grid: true });
  }
  return ticks;
}

/** Cumulative good days over the target period. */
function drawCumulative(t, rep) {
  const p = rep.progress, n = p.period_days;
  const f = frame($("#cumulative"), 260, { r: 100 });
  const top = Math.max(p.required, p.good) * 1.08;
  const yTicks = niceTicks(top, 5);
  const ymax = yTicks[yTicks.length - 1];
  // Day i of the period ends at X(i + 1): the count after a day is drawn at its end.
  const X = i => f.x0 + (f.x1 - f.x0) * i / n, Y = v => f.y0 - (f.y0 - f.y1) * v / ymax;
  axes(f, monthTicks(t.from, t.to, X, f.W < 520), yTicks, Y, "优良天 good days");
  const svg = f.svg;
  // The pace line: the required count reached evenly over the period.
  polyline(svg, [[X(0), Y(0)], [X(n), Y(p.required)]], "#888", "5 4", 1.5).setAttribute("class", "pace");
  // Labelled two thirds along, under the line (the target's label holds its end).
  text(svg, X(n * 0.67) + 6, Y(p.required * 0.67) + 16, "进度线 pace", { class: "line-label", fill: "#666" });
  el("line", { x1: X(0), x2: X(n), y1: Y(p.required), y2: Y(p.required), stroke: "#b00020", "stroke-dasharray": "2 3", class: "target" }, svg);
  text(svg, X(n) + 4, Y(p.required) + 2, "目标 target " + p.required, { class: "line-label", fill: "#b00020" });
  let c = 0;
  const pts = [[X(0), Y(0)]];
  rep.days.forEach((d, i) => { if (d.class === "good") c++; pts.push([X(i + 1), Y(c)]); });
  polyline(svg, pts, "#0a7d28", "", 2.5).setAttribute("class", "good");
  if (rep.days.length) text(svg, Math.min(pts[pts.length - 1][0] + 4, f.W - 96), pts[pts.length - 1][1] - 6, "优良 good " + c, { class: "line-label", fill: "#0a7d28" });
  const today = daysBetween(t.from, rep.as_of);
  if (today >= 0 && today < n) {
    const x = X(today + 1);
    el("line", { x1: x, x2: x, y1: f.y0, y2: f.y1, stroke: "#1f3a5f", "stroke-width": 1.5, class: "today" }, svg);
    text(svg, x, f.y1 + 10, "今天 today " + rep.as_of.slice(5), { class: "line-label", fill: "#1f3a5f", "text-anchor": x > f.x1 - 60 ? "end" : "start", dx: x > f.x1 - 60 ? -4 : 4 });
  }
}

/** The series range ending on `day`: local dates, resolution and the x domain (ms). */
function seriesRange(range, day) {
  const days = range === "day" ? 1 : range === "week" ? 7 : 30;
  const from = addDays(day, 1 - days);
  return { from, to: day, days, resolution: range === "month" ? "day" : "hour", t0: localStart(from), t1: localStart(addDays(day, 1)) };
}
/** X ticks of a series range: hours of a day, days of a week, every few days of a month. */
function timeTicks(r, X, width) {
  const ticks = [];
  if (r.days === 1) {
    for (let h = 0; h <= 24; h += 3) ticks.push({ at: X(r.t0 + h * HOUR_MS), label: String(h).padStart(2, "0") + ":00", value: r.from + "T" + String(h % 24).padStart(2, "0"), grid: true });
    return thin(ticks, 44);
  }
  for (let i = 0; i <= r.days; i++) {
    const date = addDays(r.from, i);
    ticks.push({ at: X(localStart(date)), label: date.slice(5), value: date, grid: true });
  }
  return thin(ticks, width < 520 ? 46 : 40);
}

/** Colours of the compared sites. */
const SITE_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
const POLLUTANT = { pm25: { label: "PM2.5", color: "#d9534f", dash: "" }, pm10: { label: "PM10", color: "#337ab7", dash: "6 3" } };

/** The points of one series as runs: a missing or invalid value is a gap, never a zero. */
function runs(rows, key, step, timeOf) {
  const out = [];
  let run = [], last = null;
  for (const r of rows) {
    const t = timeOf(r);
    if (r[key] == null || (last != null && t - last > step)) { if (run.length) out.push(run); run = []; }
    if (r[key] != null) { run.push([t, r[key]]); last = t; } else last = null;
  }
  if (run.length) out.push(run);
  return out;
}

/**
 * The chosen sites' series over the range ending on `day`: one colour per pollutant
 * for a single site, one per site (PM10 dashed) when comparing.
 */
function drawSites(series, r, pollutants, limits, tables) {
  const f = frame($("#site-chart"), 280, { r: 118 });
  const keys = pollutants === "both" ? ["pm25", "pm10"] : [pollutants];
  const step = r.resolution === "day" ? DAY_MS : HOUR_MS;
  const timeOf = row => r.resolution === "day" ? localStart(row.date) + 12 * HOUR_MS : Date.parse(row.time);
  let max = 0;
  for (const s of series) for (const row of s.rows) for (const k of keys) if (row[k] != null) max = Math.max(max, row[k]);
  for (const k of keys) max = Math.max(max, limits[k]);
  const yTicks = niceTicks(max * 1.05, 5), ymax = yTicks[yTicks.length - 1];
  const X = t => f.x0 + (f.x1 - f.x0) * (t - r.t0) / (r.t1 - r.t0), Y = v => f.y0 - (f.y0 - f.y1) * v / ymax;
  axes(f, timeTicks(r, X, f.W), yTicks, Y, "µg/m³");
  // Limit labels in the right margin, pushed apart when the two lines are close.
  const at = Object.fromEntries(keys.map(k => [k, Y(limits[k]) + 4]));
  if (keys.length === 2 && Math.abs(at.pm25 - at.pm10) < 13) {
    const mid = (at.pm25 + at.pm10) / 2;
    at.pm10 = mid - 6.5;
    at.pm25 = mid + 6.5;
  }
  for (const k of keys) {
    const y = Y(limits[k]);
    el("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, stroke: POLLUTANT[k].color, "stroke-dasharray": "2 3", class: "limit" }, f.svg);
    text(f.svg, f.x1 + 4, at[k], POLLUTANT[k].label + " 日限值 " + limits[k], { class: "line-label limit-label", fill: POLLUTANT[k].color, "data-value": limits[k] });
  }
  series.forEach((s, i) => {
    for (const k of keys) {
      const color = series.length > 1 ? SITE_COLORS[i] : POLLUTANT[k].color;
      const dash = series.length > 1 ? POLLUTANT[k].dash : "";
      for (const run of runs(s.rows, k, step, timeOf)) {
        const pts = run.map(([t, v]) => [X(t), Y(v)]);
        if (pts.length > 1) polyline(f.svg, pts, color, dash, 1.6).setAttribute("data-site", s.site);
        else el("circle", { cx: pts[0][0], cy: pts[0][1], r: 2, fill: color, "data-site": s.site }, f.svg);
      }
    }
  });
  if (!series.some(s => s.rows.length)) text(f.svg, (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, "无数据 no data in this range", { "text-anchor": "middle", class: "axis-title" });
  siteLegend(series, keys, tables, r);
}
function siteLegend(series, keys, tables, r) {
  const box = $("#site-legend");
  box.innerHTML = "";
  const add = (style, cls, label) => {
    const s = document.createElement("span");
    s.innerHTML = '<i class="line ' + cls + '" style="' + style + '"></i>';
    s.append(label);
    box.appendChild(s);
  };
  if (series.length > 1) {
    series.forEach((s, i) => add("border-color:" + SITE_COLORS[i], "", s.site));
    for (const k of keys) add("border-color:#555", POLLUTANT[k].dash ? "dash" : "", POLLUTANT[k].label);
  } else for (const k of keys) add("border-color:" + POLLUTANT[k].color, "", POLLUTANT[k].label + (series[0] ? " " + series[0].site : ""));
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = (r.resolution === "day" ? "日均值 daily values" : "小时均值 hourly means; gaps = silent or invalid hours") +
    " · 日限值 daily limits: IAQI 100 of " + tables + " (µg/m³)";
  box.appendChild(note);
}
