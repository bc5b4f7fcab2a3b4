//! Stamping's own domain: the stored stamp record. The rules it shares with
//! the other services (hashing, stamp formats, validation, namespaces,
//! limits) live in `omninode-core`.

pub mod record;

pub use record::StampRecord;
