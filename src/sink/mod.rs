//! Sinks: where committed readings go from the outbox. Today one, InfluxDB (v1 and v2
//! write APIs).

pub mod influx;
pub mod line_protocol;
pub mod policy;
pub mod schema;
pub mod tail;
