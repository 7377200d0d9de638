//! aq-ingest: takes PM2.5/PM10 readings from construction-site monitors over MQTT,
//! keeps every one durably in a local SQLite store, forwards them to InfluxDB, and
//! counts good-air days under GB 3095 / HJ 633 (site and district daily values, the
//! target report, the HTTP API and dashboard).
//!
//! Module map, in data-path order:
//!
//! - [`source`]: where messages come from — the contract ([`source::Message`], [`source::Acker`]), the embedded broker ([`source::devices`]), an external broker's client ([`source::mqtt`]), a NATS JetStream cluster's durable consumer ([`source::nats`], MQTT devices on a replicated broker), topic filters ([`source::topic`]).
//! - [`decode`]: payload bytes → observations ([`decode::json`]). Pure.
//! - [`validate`]: observations → [`model::Reading`]s or [`reject::Rejection`]s. Pure.
//! - [`ingest`]: the stage that batches, commits and then acknowledges.
//! - [`store`]: SQLite — readings, outbox, dead letters, rejects, hourly aggregates, the
//!   site and district day caches, migrations, the one-service lock.
//! - [`sink`]: the InfluxDB writer ([`sink::influx`]), its status policy
//!   ([`sink::policy`]), the line-protocol encoder and the schema. Encoder and policy
//!   are pure.
//! - [`aqi`]: the domain rules — HJ 633 index, GB 3095 validity, district value, the
//!   good-day target. Pure.
//! - [`derived`]: hourly and daily derived series (lines) for InfluxDB.
//! - [`report`]: the target report from the store's day caches.
//! - [`sites`]: the site registry (`config/sites.toml`).
//! - [`sim`]: the device simulator (demo, load tests).
//! - [`api`]: the read-only HTTP API and the dashboard (axum).
//! - [`alerts`]: hourly PM10 alerts published to MQTT.
//! - [`app`]: wiring only — channels, tasks, ordered shutdown.
//! - [`broker`]: the embedded broker's config; the broker itself is the device source
//!   [`source::devices`] (aq-ingest terminating the devices' MQTT connections).
//! - Shared: [`model`] (domain types), [`reject`], [`metrics`], [`clock`],
//!   [`backoff`], [`config`].
//!
//! Dependencies point one way: `app → ingest → (source, decode, validate, store, sink)
//! → model`.

pub mod alerts;
pub mod api;
pub mod app;
pub mod aqi;
pub mod backoff;
pub mod broker;
pub mod clock;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod decode;
pub mod derived;
pub mod housekeeping;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reject;
pub mod report;
pub mod sim;
pub mod sink;
pub mod sites;
pub mod source;
pub mod stages;
pub mod store;
pub mod validate;
