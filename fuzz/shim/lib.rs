//! The HJ 212 decoder and the few pure modules it uses (`model`, `reject`,
//! `aqi::zone`, `decode::Observation`), compiled from the service's own sources on
//! their own: the fuzzer rebuilds everything it links with sanitizer flags, and this
//! keeps that to chrono and thiserror instead of the whole service (tokio, axum,
//! SQLite, TLS) — minutes instead of a quarter of an hour, so CI can afford a run.
//! The module paths mirror the crate's, so the decoder's `crate::…` imports resolve.

#![allow(dead_code, unreachable_pub)]

#[path = "../../src/model.rs"]
pub mod model;
#[path = "../../src/reject.rs"]
pub mod reject;

pub mod aqi;
pub mod decode;
