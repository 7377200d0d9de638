// One day: the supervision bulletin (sortable site table, exceedances and offline sites
// highlighted) and the site map coloured by that day's AQI.

/** The bulletin's rows: sites that reported, then those offline that day. */
function bulletinRows(b) {
  const rows = b.sites.map(s => ({
    site: s.site, status: s.aqi == null ? "不足 incomplete" : "报送 reporting", pm10: s.pm10, pm25: s.pm25, aqi: s.aqi, category_zh: s.category_zh, color: s.color,
    exceeds: [s.pm10_exceeds_daily_limit ? "PM10" : "", s.pm25_exceeds_daily_limit ? "PM2.5" : ""].filter(Boolean).join(" "),
    ex10: s.pm10_exceeds_daily_limit, ex25: s.pm25_exceeds_daily_limit,
    alerts: s.hours_over_pm10_alert.length, rejected: s.rejected, offline: false,
  }));
  for (const site of b.offline) if (!rows.some(r => r.site === site)) {
    rows.push({ site, status: "离线 offline", pm10: null, pm25: null, aqi: null, category_zh: null, exceeds: "", alerts: null, rejected: null, offline: true });
  }
  return rows;
}

const sorting = { key: null, dir: 1 };
function sortRows(rows) {
  if (!sorting.key) return rows;
  const th = document.querySelector('#bulletin th[data-key="' + sorting.key + '"]');
  const textual = th && th.dataset.type === "text";
  return rows.slice().sort((a, b) => {
    const x = a[sorting.key], y = b[sorting.key];
    // Empty values last, whichever the direction.
    if (x == null || x === "") return y == null || y === "" ? 0 : 1;
    if (y == null || y === "") return -1;
    return sorting.dir * (textual ? String(x).localeCompare(String(y)) : x - y);
  });
}

function fillTable(rows) {
  const tb = $("#bulletin tbody");
  tb.innerHTML = "";
  for (const r of sortRows(rows)) {
    const tr = document.createElement("tr");
    tr.dataset.site = r.site;
    if (r.offline) tr.className = "offline";
    else if (r.exceeds) tr.className = "exceeds";
    const cells = [[r.site, "text"], [r.status, "text"], [fmt(r.pm10), r.ex10 ? "exceed" : ""], [fmt(r.pm25), r.ex25 ? "exceed" : ""],
      [fmt(r.aqi), ""], [r.category_zh || "—", "text"], [r.exceeds || "—", r.exceeds ? "text exceed" : "text"], [fmt(r.alerts), r.alerts ? "exceed" : ""], [fmt(r.rejected), ""]];
    for (const [v, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    if (r.color) tr.children[5].innerHTML = '<span class="chip" style="background:' + r.color + (category(r.category_zh).dark ? ";color:#fff" : "") + '">' + r.category_zh + "</span>";
    tb.appendChild(tr);
  }
}
function setupSorting(getRows) {
  for (const th of document.querySelectorAll("#bulletin th")) {
    th.tabIndex = 0;
    const go = () => {
      sorting.dir = sorting.key === th.dataset.key ? -sorting.dir : (th.dataset.type === "text" ? 1 : -1);
      sorting.key = th.dataset.key;
      for (const o of document.querySelectorAll("#bulletin th")) o.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sorting.dir > 0 ? "ascending" : "descending");
      fillTable(getRows());
    };
    th.onclick = go;
    th.onkeydown = e => { if (e.key === "Enter") go(); };
  }
}

function renderBulletin(b) {
  const d = b.district;
  const box = $("#district");
  if (d && d.aqi != null) {
    const c = category(d.category_zh);
    box.innerHTML = "全区 District AQI <b>" + d.aqi + '</b> <span class="chip" style="background:' + d.color + (c.dark ? ";color:#fff" : "") + '">' + d.category_zh + " " + d.category + "</span>";
    box.append(" · 首要 primary " + (d.primary || "—") + " · PM2.5 " + fmt(d.pm25) + " · PM10 " + fmt(d.pm10) + " µg/m³ · 站点 sites " + d.sites);
  } else box.textContent = "全区 District: 无数据 no data" + (d ? " (sites " + d.sites + ")" : "");
  $("#limits-note").textContent = "超标 Exceeds = 日均值高于 daily mean above PM10 " + b.limits.pm10_daily + " / PM2.5 " + b.limits.pm25_daily +
    " µg/m³ (" + b.tables + "); 报警小时 alert hours: PM10 hourly mean above " + b.limits.pm10_hourly_alert + " µg/m³";
  $("#offline").textContent = b.offline.length ? b.offline.join(", ") : "无 none";
  $("#rejects").textContent = b.rejects_by_site.length ? b.rejects_by_site.map(r => (r.site ?? "?") + " " + r.count).join(", ") : "无 none";
  fillTable(bulletinRows(b));
}

/** Metres per degree of latitude (mean Earth radius), for the map's scale bar. */
const M_PER_DEG = 111195;

/**
 * The registered sites at their coordinates (equirectangular, longitude scaled by the
 * cosine of the mean latitude: true enough over a district), coloured by the day's AQI.
 */
function drawMap(sites, b) {
  const placed = sites.filter(s => s.registered && s.latitude != null && s.longitude != null);
  const svg = $("#map");
  svg.innerHTML = "";
  const W = Math.max(300, Math.round(svg.getBoundingClientRect().width || 400)), H = Math.round(Math.min(420, Math.max(240, W * 0.7)));
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const bySite = Object.fromEntries(b.sites.map(s => [s.site, s]));
  const lat0 = placed.length ? placed.reduce((a, s) => a + s.latitude, 0) / placed.length : 0;
  const k = Math.cos(lat0 * Math.PI / 180);
  const xs = placed.map(s => s.longitude * k), ys = placed.map(s => s.latitude);
  const pad = 40, spanX = placed.length ? Math.max(...xs) - Math.min(...xs) : 0, spanY = placed.length ? Math.max(...ys) - Math.min(...ys) : 0;
  const span = Math.max(spanX, spanY, 0.01);
  const scale = Math.min((W - 2 * pad - 80) / span, (H - 2 * pad) / span);
  const cx = (Math.max(...xs) + Math.min(...xs)) / 2, cy = (Math.max(...ys) + Math.min(...ys)) / 2;
  const P = s => [W / 2 - 40 + (s.longitude * k - cx) * scale, H / 2 - (s.latitude - cy) * scale];
  if (placed.length) scaleBar(svg, scale, H);
  text(svg, W - 20, 24, "N", { "text-anchor": "middle", "font-size": 12, "font-weight": 700 });
  el("path", { d: "M" + (W - 20) + " 28 l-5 12 l5 -3 l5 3 z", fill: "#333" }, svg);
  for (const s of placed) {
    const [x, y] = P(s), v = bySite[s.id];
    const offline = b.offline.includes(s.id);
    const g = el("g", { class: "site-marker", "data-site": s.id }, svg);
    el("circle", { cx: x, cy: y, r: 9, fill: v && v.color ? v.color : "#fff", stroke: v && v.color ? "#333" : "#888", "stroke-width": 1.2, "stroke-dasharray": v && v.color ? "" : "3 2" }, g);
    const label = s.id + (v && v.aqi != null ? " · " + v.aqi : offline ? " · 离线" : " · —");
    text(g, x + 12, y + 4, label, { class: "map-label" });
    const title = el("title", {}, g);
    title.textContent = (s.name || s.id) + (s.location ? " (" + s.location + ")" : "") + "\n" + s.latitude + ", " + s.longitude +
      "\n" + (v && v.aqi != null ? "AQI " + v.aqi + " " + v.category_zh : offline ? "离线 offline" : "无数据 no data");
  }
  if (!placed.length) text(svg, W / 2, H / 2, "无坐标站点 no site has coordinates", { "text-anchor": "middle", class: "axis-title" });
  const missing = sites.filter(s => s.registered && (s.latitude == null || s.longitude == null));
  const aside = $("#no-coords");
  aside.innerHTML = "<b>无坐标 Without coordinates</b>";
  const ul = document.createElement("ul");
  for (const s of missing) {
    const li = document.createElement("li");
    li.dataset.site = s.id;
    const v = bySite[s.id];
    li.textContent = s.id + (s.name ? " " + s.name : "") + (v && v.aqi != null ? " · AQI " + v.aqi : "");
    ul.appendChild(li);
  }
  if (!missing.length) ul.innerHTML = "<li>无 none</li>";
  aside.appendChild(ul);
  $("#map-date").textContent = b.date + " AQI";
}
function scaleBar(svg, scale, H) {
  const metresPerPx = M_PER_DEG / scale;
  const want = metresPerPx * 100;
  const nice = [100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000].find(m => m >= want * 0.5) || 50000;
  const px = nice / metresPerPx;
  el("line", { x1: 12, x2: 12 + px, y1: H - 14, y2: H - 14, stroke: "#333", "stroke-width": 2 }, svg);
  text(svg, 12, H - 20, nice >= 1000 ? nice / 1000 + " km" : nice + " m", { "font-size": 11, class: "scale" });
}
