//! The site registry through MQTT: a site's registered unit and cadence apply to
//! payloads that do not state them, a site that does not count for the district is left
//! out of the district value, and with `unregistered = "reject"` a reading from an
//! unknown site is refused with `unknown_site`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use aq_ingest::reject::RejectReason;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_units_cadences_and_district_membership_apply() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sites = dir.path().join("sites.toml");
    std::fs::write(
        &sites,
        "[[site]]\nid = \"mg\"\nname = \"Tunnel works\"\nunit = \"mg/m3\"\ninterval_secs = 300\n\n[[site]]\nid = \"ref\"\ncounts_for_district = false\n",
    )
    .unwrap();
    let port = free_port();
    let text = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"t-reg\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"AQ_TEST_NO_SUCH_TOKEN\"\n[sites]\nfile = \"{}\"\nunregistered = \"reject\"\n",
        broker.url(),
        dir.path().join("aq.db").display(),
        sites.display()
    );
    let svc = Service::start(Config::parse(&text, "test").unwrap()).await;
    let m = Arc::clone(&svc.metrics);
    // Site mg: a whole day of five-minute samples in mg/m³, without unit or interval in
    // the payload. Site ref: hourly means, very polluted, not in the district.
    let mg: Vec<String> = (0..288)
        .map(|i| {
            format!(
                r#"{{"ts":"2016-08-01T{:02}:{:02}:00+08:00","pm25":0.03,"pm10":0.06}}"#,
                i / 12,
                (i % 12) * 5
            )
        })
        .collect();
    let rf: Vec<String> = (0..24)
        .map(|h| {
            format!(
                r#"{{"ts":"2016-08-01T{h:02}:00:00+08:00","pm25":300,"pm10":500,"period":"hour"}}"#
            )
        })
        .collect();
    publish_all(
        broker.port,
        vec![
            (
                "aq/mg/readings".into(),
                format!("[{}]", mg.join(",")).into_bytes(),
            ),
            (
                "aq/ref/readings".into(),
                format!("[{}]", rf.join(",")).into_bytes(),
            ),
            (
                "aq/stranger/readings".into(),
                br#"{"ts":"2016-08-01T08:00:00+08:00","pm10":10}"#.to_vec(),
            ),
        ],
    )
    .await;
    wait_for("3 messages acknowledged", Duration::from_secs(30), || {
        Metrics::get(&m.messages_acked) == 3
    })
    .await;
    assert_eq!(m.rejected(RejectReason::UnknownSite), 1);
    let c = db(dir.path());
    // Converted from mg/m³, with the registered cadence.
    let (pm25, interval): (f64, i64) = c
        .query_row(
            "SELECT pm25, interval_secs FROM readings WHERE site = 'mg' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((pm25, interval), (30.0, 300));

    let get = |path: &str| -> serde_json::Value {
        let (s, b) = http("GET", &format!("http://127.0.0.1:{port}{path}"), "").unwrap();
        assert_eq!(s, 200, "{b}");
        serde_json::from_str(&b).unwrap()
    };
    // The district is site mg alone (ref does not count): PM10 60, not (60 + 500) / 2.
    let d = get("/api/v1/district/daily?from=2016-08-01&to=2016-08-01");
    assert_eq!(
        (d[0]["pm10"].clone(), d[0]["sites"].clone()),
        (60.into(), 1.into())
    );
    let s = get("/api/v1/sites");
    let mg = s
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "mg")
        .unwrap();
    assert_eq!(
        (
            mg["name"].as_str(),
            mg["registered"].as_bool(),
            mg["interval_secs"].as_u64()
        ),
        (Some("Tunnel works"), Some(true), Some(300))
    );
    let r = s
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "ref")
        .unwrap();
    assert_eq!(r["counts_for_district"], false);
    svc.stop().await;
}
