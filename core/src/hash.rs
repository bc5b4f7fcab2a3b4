//! Content normalisation and BLAKE3 hashing.

/// Number of hex characters in a BLAKE3 digest.
pub const HASH_HEX_LEN: usize = 64;

/// BLAKE3 of raw bytes, as 64 lowercase hex characters.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The form content is hashed in: runs of three or more newlines collapsed to
/// two, then leading and trailing whitespace stripped. (Stamps are removed
/// before this; see [`crate::stamp::strip_stamps`].)
pub fn normalise(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut newlines = 0usize;
    for ch in content.chars() {
        if ch == '\n' {
            newlines += 1;
            if newlines <= 2 {
                out.push(ch);
            }
        } else {
            newlines = 0;
            out.push(ch);
        }
    }
    out.trim().to_owned()
}

/// Whether `hash` is 64 lowercase hex characters.
pub fn is_valid_hash(hash: &str) -> bool {
    hash.len() == HASH_HEX_LEN && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake3_of_known_input() {
        // The BLAKE3 test vector for the empty input.
        assert_eq!(hash_bytes(b""), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        assert!(is_valid_hash(&hash_bytes(b"abc")));
    }

    #[test]
    fn normalise_collapses_newline_runs_and_strips() {
        assert_eq!(normalise("\n\n  a\n\n\n\nb\n\nc\n\n\n"), "a\n\nb\n\nc");
        assert_eq!(normalise("a\nb"), "a\nb");
        assert_eq!(normalise("   "), "");
    }

    #[test]
    fn hash_format_is_strict() {
        assert!(!is_valid_hash(&"A".repeat(64)));
        assert!(!is_valid_hash(&"a".repeat(63)));
        assert!(!is_valid_hash(&"g".repeat(64)));
        assert!(is_valid_hash(&"0a".repeat(32)));
    }
}
