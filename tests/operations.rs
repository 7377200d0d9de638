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

/// check-config refuses a target whose period reaches the 2026 standards without naming
/// its tables, and warns when a target's tables were in force for none of its dates.
#[test]
fn check_config_makes_the_table_set_of_a_2026_target_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let check = |target: &str| {
        std::fs::write(
            dir.path().join("aq.toml"),
            format!("[[target]]\nname = \"2026H2\"\nfrom = \"2026-07-01\"\nto = \"2026-12-31\"\ngood_days = 100\n{target}"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(dir.path())
            .args(["--config", "aq.toml", "check-config"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = check("");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("2026H2") && text.contains("tables"), "{text}");
    let (code, text) = check("tables = \"HJ 633-2026\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");
    let (code, text) = check("tables = \"HJ 633-2012\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("warning") && text.contains("none of its dates"),
        "{text}"
    );
}
