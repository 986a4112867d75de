//! Data in: a synthetic world generator (items, users, sessions of feedback with realistic
//! structure) and the JSONL, CSV and MovieLens importers, both writing through a
//! [`world::WorldSink`] into a JSONL directory or a data dir's log.

pub mod generate;
pub mod import;
pub mod store;
pub mod world;
