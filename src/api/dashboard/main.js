// The page: the first target's progress and calendar, then one selected day (the
// bulletin, the map, the end of the site chart's range), chosen in the calendar, with
// the date picker or with previous/next.
const state = { t: null, rep: null, sites: [], day: null, bulletin: null, picks: [] };

function renderProgress(t, rep) {
  const p = rep.progress;
  $("#target-name").textContent = t.name + " (" + t.from + " … " + t.to + ")";
  $("#good").textContent = p.good;
  $("#required").textContent = p.required;
  const st = $("#status");
  const words = { achieved: "已达标 achieved", on_track: "进度正常 on track", at_risk: "有风险 at risk", unreachable: "无法完成 unreachable" };
  st.textContent = words[p.status];
  st.className = "status-" + p.status;
  $("#needed").textContent = p.still_needed;
  $("#remaining").textContent = p.remaining;
  $("#rate").textContent = p.rate_needed == null ? "—" : (p.rate_needed * 100).toFixed(1) + "%";
  $("#note").textContent = "截至 As of " + rep.as_of + ". " + rep.note + " Tables 标准: " + rep.tables + ".";
}

/** Shows day `date` everywhere; `scroll` brings the bulletin into view (a calendar click). */
async function selectDay(date, scroll) {
  state.day = date;
  $("#date").value = date;
  markSelected(date);
  const b = await api("/api/v1/bulletin/" + date);
  if (state.day !== date) return; // a later choice overtook this one
  state.bulletin = b;
  renderBulletin(b);
  drawMap(state.sites, b);
  $("#day").dataset.date = date;
  history.replaceState(null, "", "#" + date);
  if (scroll) {
    const r = $("#day").getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight - 80) $("#day").scrollIntoView({ block: "start" });
  }
  await drawSeries();
}

async function drawSeries() {
  // Only the latest request draws: choices made quickly one after another do not race.
  const gen = state.seriesGen = (state.seriesGen || 0) + 1;
  const day = state.day, range = $("#range").value, picks = state.picks.slice();
  const r = seriesRange(range, day);
  const series = [];
  for (const site of picks) {
    const rows = await api("/api/v1/sites/" + encodeURIComponent(site) + "/series?resolution=" + r.resolution + "&from=" + r.from + "&to=" + r.to);
    series.push({ site, rows });
  }
  if (gen !== state.seriesGen) return;
  const limits = state.rep ? state.rep.daily_limits : { pm25: state.bulletin.limits.pm25_daily, pm10: state.bulletin.limits.pm10_daily };
  const tables = state.rep ? state.rep.tables : state.bulletin.tables;
  drawSites(series, r, $("#pollutant").value, limits, tables);
  const csv = $("#series-csv");
  csv.innerHTML = "";
  for (const s of picks) {
    const bt = Object.assign(document.createElement("button"), { type: "button", textContent: "CSV " + s });
    bt.onclick = () => run(downloadCsv("/api/v1/sites/" + encodeURIComponent(s) + "/series?resolution=" + r.resolution + "&from=" + r.from + "&to=" + r.to, s + "-" + r.from + "-" + r.to + ".csv"));
    csv.appendChild(bt);
  }
  // What is drawn, for the browser test to wait on.
  $("#site-box").dataset.range = r.from + "/" + r.to;
  $("#site-box").dataset.sites = picks.join(",");
}

/** The site checkboxes: sites that have readings, at most four at once. */
function setupPicks() {
  const box = $("#site-picks");
  const withData = state.sites.filter(s => s.last_reading != null);
  state.picks = withData.slice(0, 1).map(s => s.id);
  for (const s of withData) {
    const l = document.createElement("label");
    l.innerHTML = '<input type="checkbox" value="' + s.id + '"' + (state.picks.includes(s.id) ? " checked" : "") + "> " + s.id;
    box.appendChild(l);
  }
  const sync = () => {
    const boxes = [...box.querySelectorAll("input")];
    state.picks = boxes.filter(b => b.checked).map(b => b.value);
    for (const b of boxes) b.disabled = !b.checked && state.picks.length >= 4;
  };
  sync();
  box.onchange = () => { sync(); run(drawSeries()); };
}

/** Runs an action started by the user; a failure is shown, not swallowed. */
function run(promise) {
  return promise.catch(e => { document.body.dataset.error = String(e); console.error(e); });
}

function setupControls() {
  $("#date").onchange = () => { if ($("#date").value) run(selectDay($("#date").value)); };
  $("#prev").onclick = () => run(selectDay(addDays(state.day, -1)));
  $("#next").onclick = () => run(selectDay(addDays(state.day, 1)));
  $("#range").onchange = () => run(drawSeries());
  $("#pollutant").onchange = () => run(drawSeries());
  setupSorting(() => bulletinRows(state.bulletin));
  const csv = {
    progress: () => ["/api/v1/district/daily?from=" + state.t.from + "&to=" + state.rep.as_of, "district-" + state.t.from + "-" + state.rep.as_of + ".csv"],
    calendar: () => ["/api/v1/district/daily?from=" + state.t.from + "&to=" + state.rep.as_of, "calendar-" + state.t.name + ".csv"],
    bulletin: () => ["/api/v1/bulletin/" + state.day, "bulletin-" + state.day + ".csv"],
    sites: () => ["/api/v1/sites", "sites.csv"],
  };
  for (const bt of document.querySelectorAll("[data-csv]")) bt.onclick = () => run(downloadCsv(...csv[bt.dataset.csv]()));
  $("#cal-svg").onclick = () => save(new Blob([calendarSvg(state.t, state.rep)], { type: "image/svg+xml" }), "calendar-" + state.t.name + ".svg");
  $("#cal-png").onclick = () => run(calendarPng(state.t, state.rep).then(b => save(b, "calendar-" + state.t.name + ".png")));
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      if (state.rep) drawCumulative(state.t, state.rep);
      if (state.bulletin) drawMap(state.sites, state.bulletin);
      run(drawSeries());
    }, 150);
  });
}

/** The day shown first: #YYYY-MM-DD in the address, else the last day with data. */
function firstDay(t, rep) {
  const asked = location.hash.slice(1);
  if (/^\d{4}-\d{2}-\d{2}$/.test(asked)) return asked;
  const withData = rep ? rep.days.filter(d => d.aqi != null) : [];
  if (withData.length) return withData[withData.length - 1].date;
  if (rep && rep.days.length) return rep.days[rep.days.length - 1].date;
  return iso(new Date(Date.now() + 8 * HOUR_MS));
}

async function main() {
  const [targets, sites] = await Promise.all([api("/api/v1/targets"), api("/api/v1/sites")]);
  state.sites = sites;
  if (targets.length) {
    const t = targets[0];
    state.t = t;
    state.rep = await api("/api/v1/targets/" + encodeURIComponent(t.name));
    renderProgress(t, state.rep);
    drawCumulative(t, state.rep);
    renderCalendar(t, state.rep, (date, scroll) => run(selectDay(date, scroll)));
  } else {
    $("#target-name").textContent = "未配置目标 no target configured";
    for (const id of ["#progress", "#calendar-box"]) $(id).hidden = true;
  }
  setupPicks();
  setupControls();
  await selectDay(firstDay(state.t, state.rep));
  // Whether the page fits the screen's width (no sideways scrolling on a phone);
  // wide tables scroll inside their box instead. The browser test reads it.
  document.body.dataset.fits = String(document.documentElement.scrollWidth <= document.documentElement.clientWidth);
  document.body.dataset.ready = "1";
}
main().catch(e => { document.body.dataset.error = String(e); console.error(e); });
