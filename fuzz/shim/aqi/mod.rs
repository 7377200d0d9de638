//! `aqi::zone` of the service, for the decoder (see `shim/lib.rs`).

#[path = "../../../src/aqi/zone.rs"]
pub mod zone;
