//! Sources: where raw messages come from. Each message carries what the ingest stage
//! needs to acknowledge it after its commit.

pub mod mqtt;
pub mod topic;
