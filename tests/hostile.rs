//! A corpus of malformed and hostile payloads, interleaved with valid readings: each bad
//! one is rejected with its own reason (counted and kept in the `rejects` table), every
//! valid one is stored, and the service keeps running.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aq_ingest::metrics::Metrics;
use aq_ingest::reject::RejectReason;
use common::*;

fn corpus(now_ms: i64) -> Vec<(String, Vec<u8>, &'static str)> {
    let t = now_ms - 3_600_000;
    let ok_topic = "aq/dev-site/readings".to_string();
    let obj = |body: &str| format!("{{\"ts\":{t},{body}}}").into_bytes();
    let mut v: Vec<(String, Vec<u8>, &'static str)> = vec![
        (ok_topic.clone(), b"{\"ts\":".to_vec(), "bad_json"),
        (ok_topic.clone(), vec![0xff, 0xfe, b'{', b'}'], "not_utf8"),
        (ok_topic.clone(), b"42".to_vec(), "not_an_object"),
        (ok_topic.clone(), b"\"hello\"".to_vec(), "not_an_object"),
        (ok_topic.clone(), b"null".to_vec(), "not_an_object"),
        (ok_topic.clone(), b"[]".to_vec(), "empty_batch"),
        (
            ok_topic.clone(),
            b"{\"pm10\":10}".to_vec(),
            "missing_timestamp",
        ),
        (
            ok_topic.clone(),
            b"{\"ts\":\"yesterday\",\"pm10\":10}".to_vec(),
            "bad_timestamp",
        ),
        (
            ok_topic.clone(),
            b"{\"ts\":\"2016-08-01 08:00:00\",\"pm10\":10}".to_vec(),
            "bad_timestamp",
        ),
        (
            ok_topic.clone(),
            format!("{{\"ts\":{},\"pm10\":10}}", now_ms + 3_600_000).into_bytes(),
            "future_timestamp",
        ),
        (
            ok_topic.clone(),
            b"{\"ts\":0,\"pm10\":10}".to_vec(),
            "stale_timestamp",
        ),
        (
            ok_topic.clone(),
            b"{\"ts\":\"1999-12-31T23:59:59+08:00\",\"pm10\":10}".to_vec(),
            "stale_timestamp",
        ),
        (
            ok_topic.clone(),
            format!("{{\"ts\":{t}}}").into_bytes(),
            "no_value",
        ),
        (ok_topic.clone(), obj("\"pm10\":\"12.5\""), "wrong_type"),
        (ok_topic.clone(), obj("\"pm10\":\"NaN\""), "not_finite"),
        (ok_topic.clone(), obj("\"pm25\":\"Infinity\""), "not_finite"),
        (
            ok_topic.clone(),
            obj("\"pm10\":1e308,\"unit\":\"mg/m3\""),
            "not_finite",
        ),
        (ok_topic.clone(), obj("\"pm10\":-3"), "negative_value"),
        (ok_topic.clone(), obj("\"pm10\":99999"), "out_of_range"),
        // A device configured for mg/m³ that sends µg/m³ numbers: 50 mg/m³ is absurd.
        (
            ok_topic.clone(),
            obj("\"pm10\":50,\"unit\":\"mg/m3\""),
            "out_of_range",
        ),
        (
            ok_topic.clone(),
            obj("\"pm10\":50,\"unit\":\"ppm\""),
            "unknown_unit",
        ),
        (ok_topic.clone(), obj("\"pm10\":true"), "wrong_type"),
        (ok_topic.clone(), obj("\"pm10\":[1]"), "wrong_type"),
        (
            ok_topic.clone(),
            obj("\"pm10\":1,\"flag\":\"X\""),
            "bad_flag",
        ),
        (
            ok_topic.clone(),
            obj("\"pm10\":1,\"period\":\"day\""),
            "bad_period",
        ),
        (
            ok_topic.clone(),
            obj("\"pm10\":1,\"interval_secs\":-1"),
            "bad_interval",
        ),
        (
            ok_topic.clone(),
            obj("\"pm10\":1,\"device\":\"dev 1\""),
            "bad_device_id",
        ),
        (
            ok_topic.clone(),
            obj("\"pm10\":1,\"device\":\"d,e=v\\\\\""),
            "bad_device_id",
        ),
        (
            ok_topic.clone(),
            b"{\"ts\":1e400,\"pm10\":1}".to_vec(),
            "bad_json",
        ),
        // Nesting deeper than the parser's recursion limit must not blow the stack.
        (
            ok_topic.clone(),
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            "bad_json",
        ),
        (
            ok_topic.clone(),
            format!("[{}{{}}]", "{},".repeat(10_000)).into_bytes(),
            "batch_too_large",
        ),
        (
            ok_topic.clone(),
            vec![b' '; 1024 * 1024],
            "payload_too_large",
        ),
    ];
    // (A newline or NUL in a topic never reaches us: the broker refuses it as malformed
    // UTF-8. The model's unit tests cover those ids.)
    for site in [
        "a b", "a,b", "a=b", "a\"b", "a\\b", "a'b;", "a%0Ab", "", "工地1",
    ] {
        v.push((
            format!("aq/{site}/readings"),
            obj("\"pm10\":1"),
            "bad_site_id",
        ));
    }
    v.push((
        "aq/".to_string() + &"x".repeat(65) + "/readings",
        obj("\"pm10\":1"),
        "bad_site_id",
    ));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_payload_is_rejected_with_its_reason_and_valid_ones_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    // "Now" is pinned: the time-window rejections are measured against exactly the
    // instant the corpus was built for.
    let now = chrono::Utc::now().timestamp_millis();
    let clock = Arc::new(aq_ingest::clock::ManualClock::new(
        aq_ingest::model::UnixMillis(now),
    ));
    let svc =
        Service::start_with_clock(config(dir.path(), &broker.url(), "t-hostile", None), clock)
            .await;
    let m = Arc::clone(&svc.metrics);
    let bad = corpus(now);
    assert!(bad.len() >= 30);
    let base = base_ts_ms();
    let mut msgs = Vec::new();
    for (i, (topic, payload, _)) in bad.iter().enumerate() {
        msgs.push(reading_msg(1, i, base));
        msgs.push((topic.clone(), payload.clone()));
    }
    // One array mixing good and bad: the bad element does not sink the others.
    let t = base + 500 * 60_000;
    msgs.push((
        "aq/site-002/readings".into(),
        format!(
            "[{{\"ts\":{t},\"pm10\":10}},{{\"ts\":{},\"pm10\":-1}},{{\"ts\":{},\"pm10\":12}}]",
            t + 60_000,
            t + 120_000
        )
        .into_bytes(),
    ));
    let total = msgs.len() as u64;
    publish_all(broker.port, msgs).await;
    wait_for(
        "every message acknowledged",
        Duration::from_secs(60),
        || Metrics::get(&m.messages_acked) == total,
    )
    .await;

    let c = db(dir.path());
    let mut stmt = c
        .prepare("SELECT reason, topic FROM rejects ORDER BY id")
        .unwrap();
    let got: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut want: Vec<&str> = bad.iter().map(|b| b.2).collect();
    want.push("negative_value");
    assert_eq!(got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), want);
    // Counted per reason, the same as the table.
    for reason in RejectReason::ALL {
        let n = want.iter().filter(|w| **w == reason.as_str()).count() as u64;
        assert_eq!(m.rejected(reason), n, "{reason}");
    }
    // Excerpts are bounded even for the 1 MB payload.
    let longest = count(&c, "SELECT max(length(excerpt)) FROM rejects");
    assert!(longest <= 210, "excerpt of {longest} chars");
    // Every valid reading stored: one per corpus entry plus two from the mixed array.
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE site = 'site-001'"),
        bad.len() as i64
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE site = 'site-002'"),
        2
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings"),
        bad.len() as i64 + 2
    );
    // Still running: a fresh reading after all that is stored too.
    publish_all(broker.port, vec![reading_msg(3, 0, base)]).await;
    wait_for("the last reading", Duration::from_secs(20), || {
        Metrics::get(&m.readings_stored) == bad.len() as u64 + 3
    })
    .await;
    svc.stop().await;
}
