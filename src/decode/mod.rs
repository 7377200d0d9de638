//! Payload decoders: bytes in, [`Observation`]s out. Pure, sync, no I/O. Decoding checks
//! syntax and types; policy (ranges, time window, ids) is `validate`'s job.

pub mod hj212;
pub mod json;

mod observation;

pub use observation::Observation;
