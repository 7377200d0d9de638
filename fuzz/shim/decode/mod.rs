//! `decode::hj212` and `decode::Observation` of the service (see `shim/lib.rs`).

#[path = "../../../src/decode/hj212/mod.rs"]
pub mod hj212;
#[path = "../../../src/decode/observation.rs"]
mod observation;
pub use observation::Observation;
