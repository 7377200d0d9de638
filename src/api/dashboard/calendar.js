// The calendar: one block per month of the target period, Monday-first weeks, each day
// in its HJ 633 colour; days without data hatched, days after "as of" plain grey.

/** The months ("YYYY-MM-01") that the period from..to touches. */
function monthsOf(from, to) {
  const out = [];
  let d = dateOf(from.slice(0, 8) + "01");
  while (iso(d) <= to) {
    out.push(iso(d));
    d = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
  }
  return out;
}
function daysInMonth(first) {
  const d = dateOf(first);
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
}
function monthTitle(first) {
  const d = dateOf(first), y = d.getUTCFullYear(), m = d.getUTCMonth();
  return { zh: y + "年" + (m + 1) + "月", en: MONTH_EN[m] + " " + y };
}

/** What a day is: "future" (after as of), "nodata" or "data". */
function dayKind(date, v, asOf) {
  if (date > asOf) return "future";
  return v && v.aqi != null ? "data" : "nodata";
}

/** The tooltip's lines for a day. */
function dayTip(date, v, asOf) {
  const wd = WEEKDAYS[weekday(date)];
  const lines = [date + " 星期" + wd[0] + " " + wd[1]];
  const kind = dayKind(date, v, asOf);
  if (kind === "future") return lines.concat("未来 future (after " + asOf + ")").join("\n");
  if (kind === "nodata") lines.push("无数据 no data — not a valid day");
  else {
    lines.push("AQI " + v.aqi + " " + v.category_zh + " " + v.category);
    lines.push("首要污染物 Primary: " + (v.primary || "— (AQI ≤ 50)"));
    lines.push("PM2.5 " + fmt(v.pm25) + " · PM10 " + fmt(v.pm10) + " µg/m³");
  }
  if (v) {
    lines.push("有效小时 Valid hours: PM2.5 " + v.valid_hours_pm25 + " · PM10 " + v.valid_hours_pm10);
    lines.push("站点 Sites counted: " + v.sites);
  }
  return lines.join("\n");
}

function renderLegend(box) {
  box.innerHTML = "";
  const item = (cls, style, label) => {
    const s = document.createElement("span");
    s.innerHTML = '<i class="' + cls + '" style="' + style + '"></i>';
    s.append(label);
    box.appendChild(s);
  };
  for (const c of CATEGORIES) item("", "background:" + c.color, c.zh + " " + c.en);
  item("nodata", "", "无数据 no data");
  item("future", "", "未来 future");
}

function monthBlock(first, t, byDate, asOf) {
  const title = monthTitle(first);
  const block = document.createElement("div");
  block.className = "month";
  block.dataset.month = first.slice(0, 7);
  block.innerHTML = "<h3>" + title.zh + " <small>" + title.en + "</small></h3>";
  const grid = document.createElement("div");
  grid.className = "days";
  WEEKDAYS.forEach(([zh, en], i) => {
    const h = document.createElement("div");
    h.className = "wd" + (i >= 5 ? " weekend" : "");
    h.innerHTML = zh + "<small>" + en + "</small>";
    grid.appendChild(h);
  });
  for (let i = 0; i < weekday(first); i++) grid.appendChild(Object.assign(document.createElement("div"), { className: "blank" }));
  for (let n = 1; n <= daysInMonth(first); n++) {
    const date = first.slice(0, 8) + String(n).padStart(2, "0");
    if (date < t.from || date > t.to) {
      grid.appendChild(Object.assign(document.createElement("div"), { className: "blank" }));
      continue;
    }
    const v = byDate[date], kind = dayKind(date, v, asOf);
    const cell = document.createElement("div");
    cell.className = "day " + kind;
    cell.dataset.date = date;
    cell.tabIndex = 0;
    cell.setAttribute("role", "button");
    cell.setAttribute("aria-label", dayTip(date, v, asOf).replace(/\n/g, "; "));
    if (kind === "data") {
      cell.style.background = v.color;
      if (category(v.category_zh) && category(v.category_zh).dark) cell.classList.add("dark");
    }
    cell.textContent = n;
    grid.appendChild(cell);
  }
  block.appendChild(grid);
  return block;
}

/** Draws the calendar; `onPick(date)` opens a day's bulletin. */
function renderCalendar(t, rep, onPick) {
  const box = $("#calendar");
  box.innerHTML = "";
  renderLegend($("#legend"));
  const byDate = Object.fromEntries(rep.days.map(d => [d.date, d]));
  const asOf = rep.as_of;
  for (const first of monthsOf(t.from, t.to)) box.appendChild(monthBlock(first, t, byDate, asOf));
  const tip = $("#tip");
  const show = cell => {
    tip.textContent = dayTip(cell.dataset.date, byDate[cell.dataset.date], asOf);
    tip.hidden = false;
    const r = cell.getBoundingClientRect(), w = tip.offsetWidth, h = tip.offsetHeight;
    // Placed in the document (not the window), so it stays by its day when the page scrolls.
    const left = Math.min(Math.max(4, r.left + r.width / 2 - w / 2), document.documentElement.clientWidth - w - 4);
    tip.style.left = left + window.scrollX + "px";
    tip.style.top = (r.top - h - 6 > 0 ? r.top - h - 6 : r.bottom + 6) + window.scrollY + "px";
  };
  const hide = () => { tip.hidden = true; };
  box.onmouseover = e => { const c = e.target.closest(".day"); if (c) show(c); };
  box.onmouseout = e => { if (e.target.closest(".day")) hide(); };
  box.onfocusin = e => { const c = e.target.closest(".day"); if (c) show(c); };
  box.onfocusout = hide;
  // A click opens the day's bulletin (scrolled into view). On a touch screen the first
  // tap shows the day (its values in the tooltip, its bulletin below) and a second tap
  // on the same day goes to the bulletin.
  let pointer = "mouse";
  box.onpointerdown = e => { pointer = e.pointerType; };
  const pick = c => {
    if (!c || c.classList.contains("future")) return;
    const again = c.classList.contains("selected");
    show(c);
    onPick(c.dataset.date, pointer !== "touch" || again);
  };
  box.onclick = e => pick(e.target.closest(".day"));
  box.onkeydown = e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pointer = "keyboard"; pick(e.target.closest(".day")); } };
}
function markSelected(date) {
  for (const c of document.querySelectorAll(".day.selected")) c.classList.remove("selected");
  const c = document.querySelector('.day[data-date="' + date + '"]');
  if (c) c.classList.add("selected");
}

/**
 * The calendar as a standalone SVG document (for reports): the months in rows of
 * three, the same colours, hatching and legend, the target's name and "as of".
 */
function calendarSvg(t, rep) {
  const byDate = Object.fromEntries(rep.days.map(d => [d.date, d]));
  const months = monthsOf(t.from, t.to), C = 22, G = 2, MW = 7 * (C + G), MH = 24 + 16 + 6 * (C + G);
  const cols = Math.min(3, months.length), rows = Math.ceil(months.length / cols);
  const W = 20 + cols * (MW + 24), H = 60 + rows * (MH + 12) + 60;
  const svg = el("svg", { xmlns: NS, width: W, height: H, viewBox: "0 0 " + W + " " + H, "font-family": "Noto Sans CJK SC, sans-serif" });
  const defs = el("defs", {}, svg);
  const pat = el("pattern", { id: "nodata", width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
  el("rect", { width: 5, height: 5, fill: "#fff" }, pat);
  el("rect", { width: 2, height: 5, fill: "#c9c9c9" }, pat);
  el("rect", { width: W, height: H, fill: "#fff" }, svg);
  text(svg, 20, 28, "空气质量日历 Air-quality calendar — " + t.name + " (" + t.from + " … " + t.to + ")", { "font-size": 15, "font-weight": 700 });
  text(svg, 20, 46, "截至 as of " + rep.as_of + " · " + rep.tables, { "font-size": 11, fill: "#555" });
  months.forEach((first, i) => {
    const ox = 20 + (i % cols) * (MW + 24), oy = 60 + Math.floor(i / cols) * (MH + 12);
    const title = monthTitle(first);
    text(svg, ox, oy + 14, title.zh + " " + title.en, { "font-size": 13, "font-weight": 700 });
    WEEKDAYS.forEach(([zh, en], k) => text(svg, ox + k * (C + G) + C / 2, oy + 32, zh, { "font-size": 10, "text-anchor": "middle", fill: "#555" }));
    let row = 0;
    for (let n = 1; n <= daysInMonth(first); n++) {
      const date = first.slice(0, 8) + String(n).padStart(2, "0");
      const k = weekday(date);
      if (n > 1 && k === 0) row++;
      if (date < t.from || date > t.to) continue;
      const v = byDate[date], kind = dayKind(date, v, rep.as_of);
      const x = ox + k * (C + G), y = oy + 38 + row * (C + G);
      const fill = kind === "data" ? v.color : kind === "future" ? "#eceef1" : "url(#nodata)";
      el("rect", { x, y, width: C, height: C, rx: 3, fill, stroke: kind === "nodata" ? "#aaa" : "none", "data-date": date }, svg);
      const dark = kind === "data" && category(v.category_zh) && category(v.category_zh).dark;
      text(svg, x + C / 2, y + C / 2 + 4, String(n), { "font-size": 10, "text-anchor": "middle", fill: dark ? "#fff" : kind === "future" ? "#aaa" : "#222" });
    }
  });
  const ly = H - 40;
  const items = CATEGORIES.map(c => [c.color, c.zh]).concat([["url(#nodata)", "无数据 no data"], ["#eceef1", "未来 future"]]);
  items.forEach(([fill, label], i) => {
    const x = 20 + (i % 4) * 140, y = ly + Math.floor(i / 4) * 18;
    el("rect", { x, y, width: 12, height: 12, fill, stroke: "#0003" }, svg);
    text(svg, x + 16, y + 10, label, { "font-size": 11 });
  });
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(svg);
}
/** The calendar SVG drawn on a canvas at twice its size, as a PNG blob. */
function calendarPng(t, rep) {
  const src = calendarSvg(t, rep);
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width * 2;
      c.height = img.height * 2;
      const g = c.getContext("2d");
      g.scale(2, 2);
      g.drawImage(img, 0, 0);
      c.toBlob(b => (b ? resolve(b) : reject(new Error("PNG encoding failed"))), "image/png");
    };
    img.onerror = () => reject(new Error("the calendar SVG did not load as an image"));
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(src);
  });
}
