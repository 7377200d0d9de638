//! The HTTP API against a service fed through MQTT: every endpoint's values, the CSV
//! shape, errors, authentication, the OpenAPI document, and `/metrics` parsed by a
//! Prometheus text-format parser.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use common::*;
use serde_json::Value;

const TOKEN: &str = "t0ken-for-tests";

/// Hourly means for `site` on local day 2016-08-`day`.
fn day_msg(site: &str, day: u32, pm25: f64, pm10: f64, hours: u32) -> (String, Vec<u8>) {
    let items: Vec<String> = (0..hours)
        .map(|h| format!(r#"{{"ts":"2016-08-{day:02}T{h:02}:00:00+08:00","pm25":{pm25},"pm10":{pm10},"period":"hour"}}"#))
        .collect();
    (
        format!("aq/{site}/readings"),
        format!("[{}]", items.join(",")).into_bytes(),
    )
}

struct Api {
    base: String,
}

impl Api {
    fn get(&self, path: &str) -> (u16, String) {
        http_with(
            "GET",
            &format!("{}{path}", self.base),
            "",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .unwrap()
    }
    fn json(&self, path: &str) -> Value {
        let (s, b) = self.get(path);
        assert_eq!(s, 200, "{path}: {b}");
        serde_json::from_str(&b).unwrap()
    }
    fn error(&self, path: &str, status: u16) -> Value {
        let (s, b) = self.get(path);
        assert_eq!(s, status, "{path}: {b}");
        serde_json::from_str::<Value>(&b).unwrap()["error"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_against_a_service_fed_through_mqtt() {
    std::env::set_var("AQ_TEST_API_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let port = free_port();
    let text = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"t-api\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"AQ_TEST_API_TOKEN\"\nmax_range_days = 100\n[[target]]\nname = \"2016H2\"\nfrom = \"2016-07-01\"\nto = \"2016-12-31\"\ngood_days = 100\n",
        broker.url(),
        dir.path().join("aq.db").display()
    );
    // "Now" is pinned for the service (offline sites, the day rejects were received).
    let now = aq_ingest::model::UnixMillis(chrono::Utc::now().timestamp_millis());
    let clock = Arc::new(aq_ingest::clock::ManualClock::new(now));
    let svc = Service::start_with_clock(Config::parse(&text, "test").unwrap(), clock).await;
    let m = Arc::clone(&svc.metrics);
    // Site a: clean on 1 and 2 August; site b: dusty (PM10 200) on 1 August, silent on
    // the 2nd. One bad payload.
    let msgs = vec![
        day_msg("a", 1, 30.0, 60.0, 24),
        day_msg("b", 1, 50.0, 200.0, 24),
        day_msg("a", 2, 20.0, 40.0, 24),
        ("aq/b/readings".to_string(), b"{\"ts\":".to_vec()),
    ];
    let beijing_today = || aq_ingest::aqi::zone::Zone::BEIJING.date_of(now);
    let published_on = beijing_today();
    publish_all(broker.port, msgs).await;
    wait_for("4 messages acknowledged", Duration::from_secs(30), || {
        Metrics::get(&m.messages_acked) == 4
    })
    .await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
    };

    // Health needs no token; everything else does.
    assert_eq!(
        http("GET", &format!("{}/healthz", api.base), "").unwrap().0,
        200
    );
    let (s, b) = http("GET", &format!("{}/api/v1/sites", api.base), "").unwrap();
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["code"],
        "unauthorized"
    );
    let (s, _) = http_with(
        "GET",
        &format!("{}/api/v1/sites", api.base),
        "",
        &[("Authorization", "Bearer wrong")],
    )
    .unwrap();
    assert_eq!(s, 401);
    // The dashboard's page takes the token from its address (a link opened in a
    // browser sends no header); nothing else does.
    let (s, page) = http("GET", &format!("{}/?token={TOKEN}", api.base), "").unwrap();
    assert_eq!(s, 200);
    assert!(page.contains("<!doctype html>"), "{page}");
    assert_eq!(
        http("GET", &format!("{}/?token=wrong", api.base), "")
            .unwrap()
            .0,
        401
    );
    assert_eq!(http("GET", &format!("{}/", api.base), "").unwrap().0, 401);
    let (s, _) = http(
        "GET",
        &format!("{}/api/v1/sites?token={TOKEN}", api.base),
        "",
    )
    .unwrap();
    assert_eq!(s, 401);

    // Sites, JSON and CSV.
    let sites = api.json("/api/v1/sites");
    let ids: Vec<&str> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert_eq!(sites[0]["last_reading"], "2016-08-02T15:00:00.000Z");
    assert_eq!(sites[0]["status"], "online");
    let (s, csv) = api.get("/api/v1/sites?format=csv");
    assert_eq!(s, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,name,location,latitude,longitude,registered,counts_for_district,interval_secs,last_reading,last_received,status"
    );
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2].starts_with("b,,,,,false,true,,2016-08-01T15:00:00.000Z,"),
        "{csv}"
    );
    let (_, accept_csv) = http_with(
        "GET",
        &format!("{}/api/v1/sites", api.base),
        "",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Accept", "text/csv"),
        ],
    )
    .unwrap();
    assert_eq!(accept_csv, csv);

    // Series at three resolutions.
    let raw = api.json("/api/v1/sites/a/series?resolution=raw&from=2016-08-01&to=2016-08-01");
    assert_eq!(raw.as_array().unwrap().len(), 24);
    assert_eq!(
        (
            raw[0]["pm25"].as_f64(),
            raw[0]["period"].as_str(),
            raw[0]["valid"].as_bool()
        ),
        (Some(30.0), Some("hour"), Some(true))
    );
    let hourly = api.json("/api/v1/sites/b/series?from=2016-08-01&to=2016-08-02");
    assert_eq!(hourly.as_array().unwrap().len(), 24);
    assert_eq!(
        (
            hourly[5]["pm10"].as_f64(),
            hourly[5]["pm10_valid"].as_bool()
        ),
        (Some(200.0), Some(true))
    );
    let daily = api.json("/api/v1/sites/b/series?resolution=day&from=2016-08-01&to=2016-08-02");
    assert_eq!(daily[0]["pm10"], 200);
    assert_eq!(daily[0]["aqi"], 125);
    assert_eq!(daily[0]["class"], "polluted");
    assert_eq!(daily[1]["class"], "no_data");
    let (_, day_csv) =
        api.get("/api/v1/sites/b/series?resolution=day&from=2016-08-01&to=2016-08-02&format=csv");
    assert!(day_csv.starts_with("date,pm25,pm10,aqi,category,primary,class,valid,valid_hours_pm25,valid_hours_pm10,sites\n2016-08-01,50,200,125,"), "{day_csv}");

    // District: the mean of concentrations. 1 August: PM10 (60 + 200) / 2 = 130 → IAQI 90;
    // PM2.5 40 → 57. Good. 2 August: site a only.
    let district = api.json("/api/v1/district/daily?from=2016-08-01&to=2016-08-02");
    assert_eq!(
        (
            district[0]["pm10"].clone(),
            district[0]["aqi"].clone(),
            district[0]["sites"].clone()
        ),
        (130.into(), 90.into(), 2.into())
    );
    assert_eq!(district[0]["class"], "good");
    assert_eq!(district[1]["sites"], 1);

    // Targets.
    let targets = api.json("/api/v1/targets");
    assert_eq!(
        (targets[0]["name"].clone(), targets[0]["required"].clone()),
        ("2016H2".into(), 101.into())
    );
    let t = api.json("/api/v1/targets/2016H2?as_of=2016-08-02");
    assert_eq!(t["progress"]["good"], 2);
    assert_eq!(t["progress"]["elapsed"], 33);
    assert_eq!(t["days"].as_array().unwrap().len(), 33);
    assert_eq!(t["days"][31]["color"], "#ffff00"); // 良, yellow
                                                   // The daily limits of its tables (IAQI 100 of HJ 633-2012), drawn by the dashboard.
    assert_eq!(t["tables"], "HJ 633-2012");
    assert_eq!(
        t["daily_limits"],
        serde_json::json!({"pm25": 75, "pm10": 150})
    );
    // The same target under both table sets: 1 August (district PM10 130 µg/m³) is
    // 良 under HJ 633-2012 and polluted under HJ 633-2026 (IAQI 100 at 120).
    let c = api.json(&format!(
        "/api/v1/targets/2016H2?as_of=2016-08-02&tables={}",
        enc("HJ 633-2012,HJ 633-2026")
    ));
    assert_eq!(
        c["tables"],
        serde_json::json!(["HJ 633-2012", "HJ 633-2026"])
    );
    assert_eq!(c["days"][31]["date"], "2016-08-01");
    assert_eq!(c["days"][31]["changed"], true, "{}", c["days"][31]);
    assert_eq!(c["days"][31]["HJ 633-2026"]["class"], "polluted");

    // Bulletin: sites ranked by PM10 with their exceedances, offline sites, rejects.
    let b = api.json("/api/v1/bulletin/2016-08-01");
    assert_eq!(b["district"]["aqi"], 90);
    assert_eq!(b["sites"][0]["site"], "b");
    assert_eq!(b["sites"][0]["pm10_exceeds_daily_limit"], true);
    assert_eq!(b["sites"][1]["pm10_exceeds_daily_limit"], false);
    assert_eq!(b["offline"].as_array().unwrap().len(), 0);
    // It says which index tables its exceedances follow.
    assert_eq!(b["tables"], "HJ 633-2012");
    let b2 = api.json("/api/v1/bulletin/2016-08-02");
    assert_eq!(b2["offline"], serde_json::json!(["b"]));
    // Each reporting site carries its category and colour (the dashboard's map).
    assert_eq!(b["sites"][0]["aqi"], 125);
    assert_eq!(b["sites"][0]["category_zh"], "轻度污染");
    assert_eq!(b["sites"][0]["color"], "#ff7e00");
    // The bulletin's site table as CSV: reporting sites ranked by PM10 (alert hours
    // counted), then the sites offline that day, which have no values.
    let (s, csv) = api.get("/api/v1/bulletin/2016-08-01?format=csv");
    assert_eq!(s, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        vec![
            "date,site,status,pm10,pm25,aqi,category,category_zh,pm10_exceeds_daily_limit,pm25_exceeds_daily_limit,hours_over_pm10_alert,rejected",
            "2016-08-01,b,reporting,200,50,125,lightly polluted,轻度污染,true,false,0,0",
            "2016-08-01,a,reporting,60,30,55,good,良,false,false,0,0",
        ],
        "{csv}"
    );
    let (_, csv2) = api.get("/api/v1/bulletin/2016-08-02?format=csv");
    assert_eq!(
        csv2.lines().skip(1).collect::<Vec<_>>(),
        vec![
            "2016-08-02,a,reporting,40,20,40,excellent,优,false,false,0,0",
            "2016-08-02,b,offline,,,,,,,,,",
        ],
        "{csv2}"
    );
    assert_eq!(b2["rejects_by_site"], serde_json::json!([]));
    // Refusals count on the day they were received (today, in Beijing; the day before
    // too if midnight passed meanwhile), per site: the topic's site level.
    let mut days = vec![published_on, beijing_today()];
    days.dedup();
    let mut by_site = Vec::new();
    for d in days {
        by_site.extend(
            api.json(&format!("/api/v1/bulletin/{d}"))["rejects_by_site"]
                .as_array()
                .unwrap()
                .clone(),
        );
    }
    assert_eq!(by_site, vec![serde_json::json!({"site": "b", "count": 1})]);

    // Errors: stable codes and the offending parameter.
    let e = api.error("/api/v1/district/daily?from=2016-13-01&to=2016-08-02", 400);
    assert_eq!(
        (e["code"].as_str(), e["parameter"].as_str()),
        (Some("bad_parameter"), Some("from"))
    );
    let e = api.error("/api/v1/district/daily?from=2016-08-02&to=2016-08-01", 400);
    assert_eq!(e["parameter"], "to");
    let e = api.error("/api/v1/district/daily?from=2016-01-01&to=2016-12-31", 400);
    assert_eq!(e["code"], "range_too_large");
    let e = api.error(
        "/api/v1/sites/a/series?resolution=raw&from=2016-08-01&to=2016-08-31",
        400,
    );
    assert_eq!(e["code"], "range_too_large");
    let e = api.error("/api/v1/sites/zz/series?from=2016-08-01&to=2016-08-01", 404);
    assert_eq!(
        (e["code"].as_str(), e["parameter"].as_str()),
        (Some("not_found"), Some("id"))
    );
    assert_eq!(
        api.error(
            "/api/v1/sites/a%20b/series?from=2016-08-01&to=2016-08-01",
            400
        )["parameter"],
        "id"
    );
    assert_eq!(api.error("/api/v1/targets/nope", 404)["parameter"], "name");
    assert_eq!(
        api.error(
            "/api/v1/sites/a/series?resolution=week&from=2016-08-01&to=2016-08-01",
            400
        )["parameter"],
        "resolution"
    );

    // The OpenAPI document lists exactly the routes, and each answers.
    let doc = api.json("/api/v1/openapi.json");
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort_unstable();
    let mut routes: Vec<&str> = aq_ingest::api::PATHS.to_vec();
    routes.sort_unstable();
    assert_eq!(documented, routes);
    for p in aq_ingest::api::PATHS {
        let path = p
            .replace("{id}", "a")
            .replace("{name}", "2016H2")
            .replace("{date}", "2016-08-01");
        let q = if path.contains("series") || path.contains("daily") {
            "?from=2016-08-01&to=2016-08-01"
        } else {
            ""
        };
        let (s, body) = api.get(&format!("{path}{q}"));
        assert!(
            s == 200 || (path == "/readyz" && s == 503),
            "{path}: {s} {body}"
        );
    }

    // Metrics, parsed as Prometheus text.
    let (s, text) = api.get("/metrics");
    assert_eq!(s, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(value("aq_messages_acked_total", None), 4.0);
    assert_eq!(value("aq_readings_stored_total", None), 72.0);
    assert_eq!(
        value("aq_rejected_total", Some(("reason", "bad_json"))),
        1.0
    );
    assert_eq!(value("aq_mqtt_connected", None), 1.0);
    assert!(value("aq_store_size_bytes", None) > 0.0);

    // Ready: store writable, broker connected, no sink configured to fail.
    let (s, r) = api.get("/readyz");
    assert_eq!(s, 200, "{r}");
    svc.stop().await;
}

/// Hourly means for `site` on local day `date` (YYYY-MM-DD), all 24 hours.
fn date_msg(site: &str, date: &str, pm25: f64, pm10: f64) -> (String, Vec<u8>) {
    let items: Vec<String> = (0..24)
        .map(|h| format!(r#"{{"ts":"{date}T{h:02}:00:00+08:00","pm25":{pm25},"pm10":{pm10},"period":"hour"}}"#))
        .collect();
    (
        format!("aq/{site}/readings"),
        format!("[{}]", items.join(",")).into_bytes(),
    )
}

/// The bulletin of a day is classed under the tables in force on it: a day mean of
/// PM2.5 70 µg/m³ (between the two IAQI-100 breakpoints, 60 and 75) is 良 and within
/// the limit on 2026-02-28 (HJ 633-2012), polluted and over the limit on 2026-03-01
/// (HJ 633-2026) — unless the configuration pins a set (here in the older spelling,
/// `table_set`), which then applies to both days. Two services on one broker, fed the
/// same messages: the shipped default (`in-force`) and a pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulletin_follows_the_tables_in_force_on_its_date_unless_pinned() {
    std::env::set_var("AQ_TEST_API_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let service = |name: &str, aqi: &str| {
        let port = free_port();
        let text = format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"t-{name}\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"AQ_TEST_API_TOKEN\"\n{aqi}",
            broker.url(),
            dir.path().join(format!("{name}.db")).display()
        );
        (Config::parse(&text, "test").unwrap(), port)
    };
    let (in_force, in_force_port) = service("in-force", "");
    let (pinned, pinned_port) = service("pinned", "[aqi]\ntable_set = \"HJ 633-2012\"\n");
    assert_eq!(in_force.aqi.tables, aq_ingest::aqi::index::Tables::InForce);
    let a = Service::start(in_force).await;
    let b = Service::start(pinned).await;
    // Site s1 at PM2.5 70 (PM10 100, under both PM10 breakpoints) on both days; site s2
    // only on the first day, cleaner.
    publish_all(
        broker.port,
        vec![
            date_msg("s1", "2026-02-28", 70.0, 100.0),
            date_msg("s1", "2026-03-01", 70.0, 100.0),
            date_msg("s2", "2026-02-28", 40.0, 60.0),
        ],
    )
    .await;
    for svc in [&a, &b] {
        let m = Arc::clone(&svc.metrics);
        wait_for("3 messages stored", Duration::from_secs(30), || {
            Metrics::get(&m.messages_acked) == 3
        })
        .await;
    }
    let bulletin = |port: u16, date: &str| {
        Api {
            base: format!("http://127.0.0.1:{port}"),
        }
        .json(&format!("/api/v1/bulletin/{date}"))
    };
    // Every field that depends on the tables, for site s1 and the district.
    let shown = |b: &Value| {
        let s1 = b["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == "s1")
            .unwrap()
            .clone();
        serde_json::json!({
            "tables": b["tables"],
            "limits": [b["limits"]["pm25_daily"], b["limits"]["pm10_daily"]],
            "s1": [s1["pm25"], s1["aqi"], s1["category_zh"], s1["pm25_exceeds_daily_limit"], s1["pm10_exceeds_daily_limit"]],
            "district_tables": b["district"]["tables"],
        })
    };
    let v2012 = serde_json::json!({
        "tables": "HJ 633-2012", "limits": [75, 150],
        // 50/40 × (70 − 35) + 50 = 93.75 → 94.
        "s1": [70, 94, "良", false, false], "district_tables": "HJ 633-2012",
    });
    let v2026 = serde_json::json!({
        "tables": "HJ 633-2026", "limits": [60, 120],
        // 50/55 × (70 − 60) + 100 = 109.09… → 110.
        "s1": [70, 110, "轻度污染", true, false], "district_tables": "HJ 633-2026",
    });
    assert_eq!(shown(&bulletin(in_force_port, "2026-02-28")), v2012);
    assert_eq!(shown(&bulletin(in_force_port, "2026-03-01")), v2026);
    assert_eq!(shown(&bulletin(pinned_port, "2026-02-28")), v2012);
    assert_eq!(shown(&bulletin(pinned_port, "2026-03-01")), v2012);
    // The district's day: PM2.5 (70 + 40) / 2 = 55 on the 28th, IAQI 50/40 × 20 + 50
    // = 75 (PM10 80: 65); s1 alone on 1 March.
    let district = |port: u16, date: &str| {
        let d = bulletin(port, date)["district"].clone();
        (d["pm25"].clone(), d["aqi"].clone(), d["class"].clone())
    };
    assert_eq!(
        district(in_force_port, "2026-02-28"),
        (55.into(), 75.into(), "good".into())
    );
    assert_eq!(
        district(in_force_port, "2026-03-01"),
        (70.into(), 110.into(), "polluted".into())
    );
    assert_eq!(
        district(pinned_port, "2026-03-01"),
        (70.into(), 94.into(), "good".into())
    );
    // The same tables in the district's daily series over both days.
    let series = Api {
        base: format!("http://127.0.0.1:{in_force_port}"),
    }
    .json("/api/v1/district/daily?from=2026-02-28&to=2026-03-01");
    assert_eq!(
        (series[0]["tables"].clone(), series[1]["tables"].clone()),
        ("HJ 633-2012".into(), "HJ 633-2026".into())
    );
    a.stop().await;
    b.stop().await;
}

/// 24 hourly means for `site` on local day 2016-08-`day`.
fn hour_readings(site: &str, day: u32, pm25: f64, pm10: f64) -> Vec<aq_ingest::model::Reading> {
    use aq_ingest::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
    let date = chrono::NaiveDate::from_ymd_opt(2016, 8, day).unwrap();
    let start = aq_ingest::aqi::zone::Zone::BEIJING.start_of(date).0;
    (0..24)
        .map(|h| Reading {
            site: SiteId::parse(site).unwrap(),
            device: None,
            ts: UnixMillis(start + h * 3_600_000),
            period: Period::Hour,
            flag: Flag::Normal,
            pm25: Some(MicrogramsPerCubicMetre::new(pm25).unwrap()),
            pm10: Some(MicrogramsPerCubicMetre::new(pm10).unwrap()),
            interval_secs: None,
        })
        .collect()
}

/// The target report served from the API's memo is exactly a fresh computation's: the
/// same as `report::build` on the store as it was when the serving computation ran,
/// never older than `api.report_max_staleness_ms` (the clock is the service's, pinned
/// and moved here), and recomputed — with the new data — in time for the bound.
/// Concurrent requests cost one computation (counted by the service's own counters,
/// not timed).
fn the_report_memo_serves_fresh_answers_within_its_bound(store: aq_ingest::store::StoreConfig) {
    use aq_ingest::clock::ManualClock;
    use aq_ingest::model::UnixMillis;
    use aq_ingest::report::{build, Spec};
    use aq_ingest::store::{Maintainer, Store, Writer};

    let cfg = Config::parse(
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"AQ_TEST_NO_TOKEN\"\n[[target]]\nname = \"2016H2\"\nfrom = \"2016-07-01\"\nto = \"2016-12-31\"\ngood_days = 100\n",
        "test",
    )
    .unwrap();
    let ctx = aq_ingest::plan::Plan::resolve(cfg, "test")
        .unwrap()
        .api
        .unwrap();
    let bound = i64::try_from(ctx.api.report_max_staleness_ms).unwrap();
    assert_eq!(bound, 1_000, "the shipped default");
    let mut writer = Writer::open(&store).unwrap();
    let mut commit = |r: Vec<aq_ingest::model::Reading>| {
        writer.commit_batch_durable(&r, &[], UnixMillis(0)).unwrap();
    };
    // 1 and 2 August clean at two sites; the daily cache refreshed as the service does.
    for day in [1, 2] {
        commit(hour_readings("a", day, 20.0, 40.0));
        commit(hour_readings("b", day, 25.0, 45.0));
    }
    Maintainer::open(&store)
        .unwrap()
        .refresh_daily(&ctx.aqi)
        .unwrap();

    let t0 = 1_470_000_000_000;
    let clock = Arc::new(ManualClock::new(UnixMillis(t0)));
    let metrics = Arc::new(Metrics::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = aq_ingest::api::router(
        ctx.clone(),
        Arc::new(Default::default()),
        (0..2)
            .map(|_| Store::open_reader(&store).unwrap())
            .collect(),
        Arc::clone(&metrics),
        Arc::clone(&clock) as Arc<dyn aq_ingest::clock::Clock>,
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
        .unwrap();
    let url = format!(
        "http://{}/api/v1/targets/2016H2?as_of=2016-08-03",
        listener.local_addr().unwrap()
    );
    rt.spawn(aq_ingest::api::serve(listener, app, std::future::pending()));
    let get = |url: &str| -> Value {
        let (s, b) = http("GET", url, "").unwrap();
        assert_eq!(s, 200, "{b}");
        serde_json::from_str(&b).unwrap()
    };
    let fresh = || {
        let t = ctx.target[0].clone();
        let spec = Spec {
            from: t.from,
            to: t.to,
            as_of: chrono::NaiveDate::from_ymd_opt(2016, 8, 3).unwrap(),
            site: None,
            target: Some(t),
        };
        build(&Store::open_reader(&store).unwrap(), &ctx.aqi, spec)
            .unwrap()
            .to_json()
    };
    let counts = || {
        (
            Metrics::get(&metrics.api_report_computations),
            Metrics::get(&metrics.api_report_shared),
        )
    };

    let first = get(&url);
    assert_eq!(first, fresh());
    assert_eq!(first["counts"]["good"], 2, "{first}");
    assert_eq!(counts(), (1, 0));

    // New data that changes the report: 3 August, heavily polluted at both sites
    // (touched since the refresh: the report recomputes it from its hours).
    commit(hour_readings("a", 3, 150.0, 300.0));
    commit(hour_readings("b", 3, 160.0, 320.0));
    let after = fresh();
    assert_ne!(after, first, "the new day must change the report");
    assert_eq!(after["counts"]["polluted"], 1, "{after}");

    // Within the bound (inclusive), the answer of the computation that started at t0:
    // the store as it was then, exactly. Being past half the bound, this request also
    // starts the next computation in the background (refresh ahead).
    clock.set(UnixMillis(t0 + bound));
    assert_eq!(get(&url), first);
    assert_eq!(counts(), (2, 1));
    // Past the bound the t0 answer is never served: this request gets the refresh's
    // (finished, or waited for), which has the new day.
    clock.set(UnixMillis(t0 + bound + 1));
    assert_eq!(get(&url), after);
    assert_eq!(counts(), (2, 2));

    // Eight concurrent clients past the bound again: one computation between them,
    // every one the fresh report.
    clock.set(UnixMillis(t0 + 3 * bound));
    let bodies: Vec<Value> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8).map(|_| s.spawn(|| get(&url))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for b in &bodies {
        assert_eq!(*b, after);
    }
    assert_eq!(counts(), (3, 9));
    // Another key (the two table sets compared) is its own computation.
    get(&format!("{url}&tables=HJ%20633-2012,HJ%20633-2026"));
    assert_eq!(counts(), (4, 9));
}

#[test]
fn the_report_memo_serves_fresh_answers_within_its_bound_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_report_memo_serves_fresh_answers_within_its_bound(aq_ingest::store::StoreConfig {
        path: dir.path().join("aq.db"),
        ..Default::default()
    });
}

#[test]
fn the_report_memo_serves_fresh_answers_within_its_bound_on_postgresql() {
    let pg = common::pg::Postgres::start();
    the_report_memo_serves_fresh_answers_within_its_bound(aq_ingest::store::StoreConfig::postgres(
        &pg.url(),
    ));
}
