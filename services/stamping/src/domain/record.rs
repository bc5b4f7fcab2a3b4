//! A stored stamp record, independent of how it is stored.

use chrono::{DateTime, Utc};

use omninode_core::StampFormat;

/// One stamp record: the first stamping of a content hash in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampRecord {
    /// Stamp uid (UUID v7).
    pub id: String,
    pub namespace: String,
    pub file_hash: String,
    pub file_path: String,
    pub file_size: u64,
    pub content_type: String,
    pub format: StampFormat,
    pub version: Option<String>,
    /// The timestamp exactly as written into the stamp.
    pub timestamp: String,
    /// The stamp text written the first time.
    pub stamp_text: String,
    pub protocol_version: String,
    pub metadata_version: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
