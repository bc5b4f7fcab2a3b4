//! Validation of stamped content: strip the stamps, rehash, compare.

use crate::{
    hash::{hash_bytes, is_valid_hash, normalise},
    stamp::{ALGORITHM, FoundStamp, StampFormat, Stripped, strip_stamps},
};

/// Content with its stamps removed, and the hash stamps must carry.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub stripped: Stripped,
    /// BLAKE3 of the normalised, unstamped content.
    pub hash: String,
    /// Whether the normalised content is empty.
    pub is_empty: bool,
}

/// Removes stamps, normalises, hashes.
pub fn hash_content(content: &str) -> Hashed {
    let stripped = strip_stamps(content);
    let normalised = normalise(&stripped.content);
    Hashed { hash: hash_bytes(normalised.as_bytes()), is_empty: normalised.is_empty(), stripped }
}

/// The verdict on one stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampVerdict {
    pub format: StampFormat,
    pub uid: String,
    pub stamped_hash: String,
    pub timestamp: String,
    /// `None` when valid; otherwise why not.
    pub problem: Option<String>,
}

/// The verdict on a whole content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    pub current_hash: String,
    pub stamps: Vec<StampVerdict>,
    /// `None` when valid: at least one stamp and every stamp valid.
    pub problem: Option<String>,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// Validates every stamp in `content` against its current hash, and against
/// `expected_hash` when given (already checked to be a well-formed hash).
pub fn validate(content: &str, expected_hash: Option<&str>) -> Validation {
    let hashed = hash_content(content);
    let stamps: Vec<StampVerdict> =
        hashed.stripped.stamps.iter().map(|stamp| judge(stamp, &hashed.hash, expected_hash)).collect();
    let problem = if stamps.is_empty() {
        Some("no stamps found".to_owned())
    } else {
        stamps.iter().enumerate().find_map(|(i, verdict)| {
            verdict.problem.as_ref().map(|p| format!("stamp {} of {}: {p}", i + 1, stamps.len()))
        })
    };
    Validation { current_hash: hashed.hash, stamps, problem }
}

fn judge(stamp: &FoundStamp, current_hash: &str, expected_hash: Option<&str>) -> StampVerdict {
    let stamped_hash = stamp.hash.clone().unwrap_or_default();
    let problem = if stamped_hash.is_empty() {
        Some("stamp has no hash".to_owned())
    } else if !is_valid_hash(&stamped_hash) {
        Some(format!("stamp hash {stamped_hash:?} is not 64 lowercase hex characters"))
    } else if stamp.format == Some(StampFormat::Rich) && stamp.integrity_hash.as_deref() != Some(stamped_hash.as_str())
    {
        Some("stamp hash and integrity hash differ (the stamp was edited)".to_owned())
    } else if stamp.format == Some(StampFormat::Rich) && stamp.integrity_algorithm.as_deref() != Some(ALGORITHM) {
        Some(format!(
            "integrity algorithm is {:?}, expected {ALGORITHM}",
            stamp.integrity_algorithm.as_deref().unwrap_or("")
        ))
    } else if stamped_hash != current_hash {
        Some(format!(
            "content changed since it was stamped: stamp hash {stamped_hash} differs from current hash {current_hash}"
        ))
    } else {
        expected_hash
            .filter(|e| *e != stamped_hash)
            .map(|expected| format!("stamp hash {stamped_hash} differs from expected hash {expected}"))
    };
    StampVerdict {
        format: stamp.format.unwrap_or(StampFormat::Lightweight),
        uid: stamp.uid.clone().unwrap_or_default(),
        stamped_hash,
        timestamp: stamp.timestamp.clone().unwrap_or_default(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{StampFields, apply, render};

    fn stamp(content: &str, format: StampFormat) -> String {
        let hashed = hash_content(content);
        let fields = StampFields {
            uid: "u-1",
            hash: &hashed.hash,
            timestamp: "2026-11-23T10:00:00.000000Z",
            version: None,
            file_path: "f.txt",
            file_size: content.len() as u64,
            content_type: "text/plain",
        };
        apply(format, &hashed.stripped.content, &render(format, &fields))
    }

    #[test]
    fn stamped_content_validates_in_both_formats() {
        for format in [StampFormat::Lightweight, StampFormat::Rich] {
            for content in ["hello", "a\n\n\n\nb\n", "#!/bin/sh\nx\n", "  padded  \n\n"] {
                let stamped = stamp(content, format);
                let verdict = validate(&stamped, None);
                assert!(verdict.is_valid(), "{format:?} {content:?}: {:?}", verdict.problem);
                assert_eq!(verdict.stamps.len(), 1);
                assert_eq!(verdict.current_hash, hash_content(content).hash);
            }
        }
    }

    #[test]
    fn a_one_byte_edit_fails_with_a_reason() {
        let stamped = stamp("fn main() {}\n", StampFormat::Lightweight);
        let edited = stamped.replace("main", "maim");
        let verdict = validate(&edited, None);
        assert!(!verdict.is_valid());
        assert!(verdict.problem.unwrap().contains("content changed since it was stamped"));
    }

    #[test]
    fn restamping_keeps_the_hash() {
        let once = stamp("body\n", StampFormat::Rich);
        let twice = stamp(&once, StampFormat::Lightweight);
        assert_eq!(hash_content(&once).hash, hash_content(&twice).hash);
        assert_eq!(strip_stamps(&twice).stamps.len(), 1, "old stamps are replaced");
    }

    #[test]
    fn no_stamp_is_invalid() {
        let verdict = validate("plain text", None);
        assert_eq!(verdict.problem.as_deref(), Some("no stamps found"));
    }

    #[test]
    fn expected_hash_is_enforced() {
        let stamped = stamp("x", StampFormat::Lightweight);
        let other = "0".repeat(64);
        let verdict = validate(&stamped, Some(&other));
        assert!(verdict.problem.unwrap().contains("differs from expected hash"));
        let own = hash_content("x").hash;
        assert!(validate(&stamped, Some(&own)).is_valid());
    }

    #[test]
    fn tampered_rich_integrity_is_caught() {
        let stamped = stamp("x", StampFormat::Rich);
        let hash = hash_content("x").hash;
        let tampered = stamped.replacen(&format!("    hash: {hash}"), &format!("    hash: {}", "1".repeat(64)), 1);
        let verdict = validate(&tampered, None);
        assert!(verdict.problem.unwrap().contains("integrity hash differ"));
    }
}
