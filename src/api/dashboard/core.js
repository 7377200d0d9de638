"use strict";
// Shared helpers: the API (with the bearer token of ?token=), downloads, dates, SVG
// drawing and the axes every chart uses.
const params = new URLSearchParams(location.search);
const token = params.get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
async function api(path) {
  const r = await fetch(path, { headers });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
function $(sel) { return document.querySelector(sel); }
/** Saves a blob as a file named `name` (a download, nothing leaves the machine). */
function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}
/** Downloads the API's CSV at `path` (the token goes in the header, as for JSON). */
async function downloadCsv(path, name) {
  const r = await fetch(path + (path.includes("?") ? "&" : "?") + "format=csv", { headers });
  if (!r.ok) throw new Error(path + ": " + r.status);
  save(await r.blob(), name);
}

const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function text(parent, x, y, s, attrs) {
  const t = el("text", Object.assign({ x, y }, attrs || {}), parent);
  t.textContent = s;
  return t;
}
function polyline(svg, points, color, dash, width) {
  return el("polyline", { points: points.map(p => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "), fill: "none", stroke: color, "stroke-width": width || 2, "stroke-dasharray": dash || "", "stroke-linejoin": "round" }, svg);
}

// Dates are local calendar dates, "YYYY-MM-DD", handled as UTC midnights.
const DAY_MS = 86400000, HOUR_MS = 3600000;
function iso(d) { return d.toISOString().slice(0, 10); }
function dateOf(s) { return new Date(s + "T00:00:00Z"); }
function addDays(s, n) { return iso(new Date(dateOf(s).getTime() + n * DAY_MS)); }
function daysBetween(a, b) { return Math.round((dateOf(b) - dateOf(a)) / DAY_MS); }
/** Beijing (UTC+8) start of local date `s`, in epoch ms: hourly series are placed on it. */
function localStart(s) { return Date.parse(s + "T00:00:00+08:00"); }
const MONTH_EN = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const MONTH_SHORT = MONTH_EN.map(m => m.slice(0, 3));
const WEEKDAYS = [["一", "Mon"], ["二", "Tue"], ["三", "Wed"], ["四", "Thu"], ["五", "Fri"], ["六", "Sat"], ["日", "Sun"]];
/** Monday-first weekday index (0 = Monday, GB/T 7408). */
function weekday(s) { return (dateOf(s).getUTCDay() + 6) % 7; }

// The HJ 633 categories (the same AQI bands in every table set) and their colours.
const CATEGORIES = [
  { zh: "优", en: "excellent", color: "#00e400", dark: false },
  { zh: "良", en: "good", color: "#ffff00", dark: false },
  { zh: "轻度污染", en: "lightly polluted", color: "#ff7e00", dark: false },
  { zh: "中度污染", en: "moderately polluted", color: "#ff0000", dark: true },
  { zh: "重度污染", en: "heavily polluted", color: "#99004c", dark: true },
  { zh: "严重污染", en: "severely polluted", color: "#7e0023", dark: true },
];
function category(zh) { return CATEGORIES.find(c => c.zh === zh); }
function fmt(v, digits) { return v == null ? "—" : (digits ? v.toFixed(digits) : String(v)); }

/** Round ticks from 0 to at least `max`: about `count` steps of 1, 2 or 5 × 10^k. */
function niceTicks(max, count) {
  const raw = Math.max(max, 1) / (count || 5);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const ticks = [];
  for (let v = 0; v < max + step - 1e-9; v += step) ticks.push(Math.round(v * 1e6) / 1e6);
  if (ticks.length < 2) ticks.push(step);
  return ticks;
}

/**
 * A plot frame in an SVG sized to its box: `W` follows the element's width so labels
 * keep their size on a phone. Returns the scales' ranges and a `draw` for the axes.
 */
function frame(svg, height, margin) {
  svg.innerHTML = "";
  const W = Math.max(300, Math.round(svg.getBoundingClientRect().width || 600));
  const H = height;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const m = Object.assign({ l: 44, r: 16, t: 14, b: 34 }, margin || {});
  return { svg, W, H, x0: m.l, x1: W - m.r, y0: H - m.b, y1: m.t };
}
/**
 * Axes of frame `f`: x ticks [{at (px), label, value}], y ticks (values, mapped by `Y`),
 * gridlines, and the y-axis title. Tick labels carry class "tick x"/"tick y" and
 * data-value (a date or a number), which the browser test reads.
 */
function axes(f, xTicks, yTicks, Y, yTitle) {
  const g = el("g", { class: "axes" }, f.svg);
  for (const v of yTicks) {
    el("line", { x1: f.x0, x2: f.x1, y1: Y(v), y2: Y(v), stroke: v === 0 ? "#888" : "#e6e6e6" }, g);
    text(g, f.x0 - 5, Y(v) + 4, String(v), { class: "tick y", "text-anchor": "end", "data-value": v });
  }
  el("line", { x1: f.x0, x2: f.x0, y1: f.y0, y2: f.y1, stroke: "#888" }, g);
  for (const t of xTicks) {
    el("line", { x1: t.at, x2: t.at, y1: f.y0, y2: f.y0 + 4, stroke: "#888" }, g);
    if (t.grid) el("line", { x1: t.at, x2: t.at, y1: f.y0, y2: f.y1, stroke: "#f0f0f0" }, g);
    text(g, t.at, f.y0 + 16, t.label, { class: "tick x", "text-anchor": "middle", "data-value": t.value });
  }
  text(g, 12, (f.y0 + f.y1) / 2, yTitle, { class: "axis-title", "text-anchor": "middle", transform: "rotate(-90 12 " + (f.y0 + f.y1) / 2 + ")" });
  return g;
}
/** Keeps every n-th tick so that labels of about `px` width do not overlap. */
function thin(ticks, px) {
  if (ticks.length < 2) return ticks;
  const gap = Math.abs(ticks[1].at - ticks[0].at) || 1;
  const every = Math.max(1, Math.ceil(px / gap));
  return ticks.filter((_, i) => i % every === 0);
}
