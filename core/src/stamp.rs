//! The two ONEX stamp formats: writing them into content, finding them, and
//! removing them.
//!
//! Lightweight, the first line (after a `#!` line, if any):
//! `# ONEX:uid=<uuid>,hash=<blake3>,ts=<rfc3339>[,v=<version>]`
//!
//! Rich, appended after a blank line:
//! ```text
//! <!-- ONEX_METADATA_START -->
//! <!-- ONEX Metadata Stamp
//!   uid: …
//!   hash: …
//!   timestamp: …
//!   protocol_version: 1.0
//!   file_path: …
//!   file_size: …
//!   content_type: …
//!   integrity:
//!     algorithm: BLAKE3
//!     hash: …
//! -->
//! <!-- ONEX_METADATA_END -->
//! ```

use std::fmt::Write as _;

/// ONEX protocol version written into stamps.
pub const PROTOCOL_VERSION: &str = "1.0";
/// Metadata schema version of stored records.
pub const METADATA_VERSION: &str = "0.1";
/// Integrity algorithm named in rich stamps.
pub const ALGORITHM: &str = "BLAKE3";

/// The idempotency-key prefix of the stamp a workflow makes: `workflow:<id>`.
const WORKFLOW_KEY_PREFIX: &str = "workflow:";

/// The idempotency key under which workflow `workflow_id` stamps its content,
/// so a step that runs again never stamps twice.
pub fn workflow_idempotency_key(workflow_id: &str) -> String {
    format!("{WORKFLOW_KEY_PREFIX}{workflow_id}")
}

/// The workflow whose stamp carries idempotency key `key`, if any.
pub fn workflow_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(WORKFLOW_KEY_PREFIX)
}

const LIGHT_PREFIX: &str = "# ONEX:";
const RICH_START: &str = "<!-- ONEX_METADATA_START -->";
const RICH_END: &str = "<!-- ONEX_METADATA_END -->";

/// How a stamp is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StampFormat {
    #[default]
    Lightweight,
    Rich,
}

/// What a stamp says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampFields<'a> {
    pub uid: &'a str,
    pub hash: &'a str,
    pub timestamp: &'a str,
    pub version: Option<&'a str>,
    pub file_path: &'a str,
    pub file_size: u64,
    pub content_type: &'a str,
}

/// The stamp text alone: one line (lightweight) or a block (rich), without a trailing newline.
pub fn render(format: StampFormat, fields: &StampFields<'_>) -> String {
    match format {
        StampFormat::Lightweight => {
            let mut line = format!("{LIGHT_PREFIX}uid={},hash={},ts={}", fields.uid, fields.hash, fields.timestamp);
            if let Some(version) = fields.version {
                let _ = write!(line, ",v={version}");
            }
            line
        }
        StampFormat::Rich => format!(
            "{RICH_START}\n<!-- ONEX Metadata Stamp\n  uid: {}\n  hash: {}\n  timestamp: {}\n  protocol_version: {PROTOCOL_VERSION}\n  file_path: {}\n  file_size: {}\n  content_type: {}\n  integrity:\n    algorithm: {ALGORITHM}\n    hash: {}\n-->\n{RICH_END}",
            fields.uid,
            fields.hash,
            fields.timestamp,
            fields.file_path,
            fields.file_size,
            fields.content_type,
            fields.hash
        ),
    }
}

/// Writes `stamp_text` into `unstamped` (content whose stamps were removed).
///
/// A lightweight stamp becomes the first line, or the second after a `#!`
/// interpreter line so scripts stay runnable; a rich stamp is appended after
/// a blank line.
pub fn apply(format: StampFormat, unstamped: &str, stamp_text: &str) -> String {
    match format {
        StampFormat::Lightweight => {
            let (shebang, rest) = match unstamped.strip_prefix("#!") {
                Some(_) => match unstamped.split_once('\n') {
                    Some((first, rest)) => (Some(first), rest),
                    None => (Some(unstamped), ""),
                },
                None => (None, unstamped),
            };
            let mut out = String::with_capacity(unstamped.len() + stamp_text.len() + 2);
            if let Some(shebang) = shebang {
                out.push_str(shebang);
                out.push('\n');
            }
            out.push_str(stamp_text);
            out.push('\n');
            out.push_str(rest);
            out
        }
        StampFormat::Rich => {
            let body = unstamped.trim_end();
            let mut out = String::with_capacity(body.len() + stamp_text.len() + 3);
            out.push_str(body);
            if !body.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(stamp_text);
            out.push('\n');
            out
        }
    }
}

/// A stamp found in content, as written (fields may be missing or malformed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundStamp {
    pub format: Option<StampFormat>,
    pub uid: Option<String>,
    pub hash: Option<String>,
    pub timestamp: Option<String>,
    pub version: Option<String>,
    /// Rich stamps only: the `integrity:` hash and algorithm.
    pub integrity_hash: Option<String>,
    pub integrity_algorithm: Option<String>,
}

/// Content with every stamp removed, and the stamps that were in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    pub content: String,
    pub stamps: Vec<FoundStamp>,
}

/// Removes every lightweight line and every complete rich block from `content`.
/// A rich start marker without an end marker is left as content.
pub fn strip_stamps(content: &str) -> Stripped {
    let mut out = String::with_capacity(content.len());
    let mut stamps = Vec::new();
    let mut lines = content.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(fields) = bare.strip_prefix(LIGHT_PREFIX) {
            stamps.push(parse_lightweight(fields));
            continue;
        }
        if bare.trim() == RICH_START {
            let block: Vec<&str> = lines.clone().take_while(|l| l.trim() != RICH_END).collect();
            let closed = lines.clone().nth(block.len()).is_some();
            if closed {
                stamps.push(parse_rich(&block));
                // Skip the block and its end marker.
                for _ in 0..=block.len() {
                    lines.next();
                }
                continue;
            }
        }
        out.push_str(line);
    }
    Stripped { content: out, stamps }
}

fn parse_lightweight(fields: &str) -> FoundStamp {
    let mut stamp = FoundStamp { format: Some(StampFormat::Lightweight), ..FoundStamp::default() };
    for pair in fields.trim().split(',') {
        let Some((key, value)) = pair.split_once('=') else { continue };
        let value = Some(value.trim().to_owned());
        match key.trim() {
            "uid" => stamp.uid = value,
            "hash" => stamp.hash = value,
            "ts" => stamp.timestamp = value,
            "v" => stamp.version = value,
            _ => {}
        }
    }
    stamp
}

fn parse_rich(block: &[&str]) -> FoundStamp {
    let mut stamp = FoundStamp { format: Some(StampFormat::Rich), ..FoundStamp::default() };
    let mut in_integrity = false;
    for line in block {
        let line = line.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some((key, value)) = trimmed.split_once(':') else { continue };
        let value = Some(value.trim().to_owned());
        if indent <= 2 {
            in_integrity = key == "integrity";
        }
        match (in_integrity && indent > 2, key) {
            (false, "uid") => stamp.uid = value,
            (false, "hash") => stamp.hash = value,
            (false, "timestamp") => stamp.timestamp = value,
            (true, "hash") => stamp.integrity_hash = value,
            (true, "algorithm") => stamp.integrity_algorithm = value,
            _ => {}
        }
    }
    stamp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> StampFields<'static> {
        StampFields {
            uid: "0190d5a4-0000-7000-8000-000000000001",
            hash: "ab",
            timestamp: "2026-11-23T10:00:00.000000Z",
            version: Some("2"),
            file_path: "src/x.py",
            file_size: 12,
            content_type: "text/x-python",
        }
    }

    #[test]
    fn lightweight_line_is_exact() {
        assert_eq!(
            render(StampFormat::Lightweight, &fields()),
            "# ONEX:uid=0190d5a4-0000-7000-8000-000000000001,hash=ab,ts=2026-11-23T10:00:00.000000Z,v=2"
        );
        let no_version = StampFields { version: None, ..fields() };
        assert!(render(StampFormat::Lightweight, &no_version).ends_with("ts=2026-11-23T10:00:00.000000Z"));
    }

    #[test]
    fn rich_block_is_exact() {
        let expected = "<!-- ONEX_METADATA_START -->\n<!-- ONEX Metadata Stamp\n  uid: 0190d5a4-0000-7000-8000-000000000001\n  hash: ab\n  timestamp: 2026-11-23T10:00:00.000000Z\n  protocol_version: 1.0\n  file_path: src/x.py\n  file_size: 12\n  content_type: text/x-python\n  integrity:\n    algorithm: BLAKE3\n    hash: ab\n-->\n<!-- ONEX_METADATA_END -->";
        assert_eq!(render(StampFormat::Rich, &fields()), expected);
    }

    #[test]
    fn both_formats_round_trip_through_strip() {
        let body = "#!/usr/bin/env python\nprint('hi')\n";
        for format in [StampFormat::Lightweight, StampFormat::Rich] {
            let text = render(format, &fields());
            let stamped = apply(format, body, &text);
            let stripped = strip_stamps(&stamped);
            assert_eq!(stripped.stamps.len(), 1, "{format:?}");
            let found = &stripped.stamps[0];
            assert_eq!(found.format, Some(format));
            assert_eq!(found.hash.as_deref(), Some("ab"));
            assert_eq!(found.uid.as_deref(), Some(fields().uid));
            assert_eq!(found.timestamp.as_deref(), Some(fields().timestamp));
            assert_eq!(stripped.content.trim(), body.trim(), "{format:?}");
        }
    }

    #[test]
    fn lightweight_goes_after_a_shebang() {
        let stamped = apply(StampFormat::Lightweight, "#!/bin/sh\necho hi\n", "# ONEX:uid=u,hash=h,ts=t");
        assert_eq!(stamped, "#!/bin/sh\n# ONEX:uid=u,hash=h,ts=t\necho hi\n");
        let plain = apply(StampFormat::Lightweight, "echo hi\n", "# ONEX:uid=u,hash=h,ts=t");
        assert_eq!(plain, "# ONEX:uid=u,hash=h,ts=t\necho hi\n");
    }

    #[test]
    fn rich_integrity_fields_are_read_separately() {
        let text = render(StampFormat::Rich, &fields()).replace("    hash: ab", "    hash: cd");
        let stamp = &strip_stamps(&text).stamps[0];
        assert_eq!(stamp.hash.as_deref(), Some("ab"));
        assert_eq!(stamp.integrity_hash.as_deref(), Some("cd"));
        assert_eq!(stamp.integrity_algorithm.as_deref(), Some("BLAKE3"));
    }

    #[test]
    fn unterminated_rich_block_is_content() {
        let content = "a\n<!-- ONEX_METADATA_START -->\nuid: x\n";
        let stripped = strip_stamps(content);
        assert!(stripped.stamps.is_empty());
        assert_eq!(stripped.content, content);
    }

    #[test]
    fn every_stamp_is_found_and_removed() {
        let rich = render(StampFormat::Rich, &fields());
        let content = format!("# ONEX:uid=a,hash=h1,ts=t\nbody\n\n{rich}\n# ONEX:uid=b,hash=h2,ts=t\n");
        let stripped = strip_stamps(&content);
        assert_eq!(stripped.stamps.len(), 3);
        assert_eq!(stripped.content, "body\n\n");
    }
}
