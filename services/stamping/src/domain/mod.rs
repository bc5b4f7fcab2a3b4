//! Stamping rules in plain Rust: hashing, stamp formats, validation, names.

pub mod content_type;
pub mod hash;
pub mod namespace;
pub mod record;
pub mod stamp;
pub mod validate;
