//! The operator's commands on a real store file, through the built binary:
//! `dead-letters` lists the lines InfluxDB refused and `--requeue` queues them again.

use std::process::Command;

use aq_ingest::model::UnixMillis;
use aq_ingest::store::{DeadLetter, DeadLetterKind, Store, StoreConfig};

fn run(cfg: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dead_letters_are_listed_and_queued_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig {
        path: dir.path().join("aq.db"),
        ..StoreConfig::default()
    };
    let cfg = dir.path().join("aq.toml");
    std::fs::write(
        &cfg,
        format!("[store]\npath = \"{}\"\n", store.path.display()),
    )
    .unwrap();

    let (ok, said, err) = run(&cfg, &["dead-letters"]);
    assert!(ok, "{err}");
    assert_eq!(said, "no dead letters\n");

    let http400 = DeadLetterKind::Refused { status: 400 };
    let letter = |seq: i64, kind: DeadLetterKind, reason: &str, line: &str| DeadLetter {
        seq,
        kind,
        reason: reason.into(),
        line: line.into(),
    };
    aq_ingest::store::Outbox::open(&store, "influx")
        .unwrap()
        .advance_durable(
            3,
            &[
                letter(1, http400, "field type conflict", "pm,site=a pm10=1 1000\n"),
                letter(2, http400, "field type conflict", "pm,site=b pm10=2 1000\n"),
                letter(
                    3,
                    DeadLetterKind::Unencodable,
                    "not encodable",
                    "Point { .. }",
                ),
            ],
            UnixMillis(1),
        )
        .unwrap();
    let (ok, said, err) = run(&cfg, &["dead-letters"]);
    assert!(ok, "{err}");
    assert_eq!(
        said.lines().map(str::trim).collect::<Vec<_>>(),
        vec![
            "2  HTTP 400  field type conflict",
            "1  unencodable  not encodable"
        ]
    );

    let (ok, said, err) = run(&cfg, &["dead-letters", "--requeue"]);
    assert!(ok, "{err}");
    assert!(said.contains("queued 2 refused lines again"), "{said}");
    let s = Store::open(&store).unwrap();
    let queued: Vec<String> = s
        .derived_head(10)
        .unwrap()
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        queued,
        vec!["pm,site=a pm10=1 1000\n", "pm,site=b pm10=2 1000\n"]
    );
    let (_, said, _) = run(&cfg, &["dead-letters"]);
    assert_eq!(said.trim(), "1  unencodable  not encodable");
}
