//! Keyset paging shared by every List RPC: opaque page tokens that carry the
//! last key of a page, and page-size coercion.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

const PREFIX: &str = "after:";

/// What a caller gets for a token this service did not issue.
pub const BAD_TOKEN: &str = "page_token is not a token this service issued";

/// The token of a page whose last key is `key`.
pub fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{key}"))
}

/// The key a token carries (`None` for the first page); `valid` checks the
/// key's shape so a forged token never reaches a query.
pub fn decode_token(token: &str, valid: impl Fn(&str) -> bool) -> Result<Option<String>, &'static str> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|text| text.strip_prefix(PREFIX).map(str::to_owned))
        .filter(|key| valid(key))
        .map(Some)
        .ok_or(BAD_TOKEN)
}

/// `requested`, or `default` for 0, at most `max` (larger sizes are coerced, per AIP-158).
pub fn page_size(requested: u32, default: u32, max: u32) -> u32 {
    match requested {
        0 => default,
        n => n.min(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_are_refused() {
        let valid = |k: &str| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        assert_eq!(decode_token(&encode_token("abc-1"), valid), Ok(Some("abc-1".into())));
        assert_eq!(decode_token("", valid), Ok(None));
        for forged in ["%%%", "bm9wZQ", &URL_SAFE_NO_PAD.encode("after:1 OR 1=1")] {
            assert_eq!(decode_token(forged, valid), Err(BAD_TOKEN), "{forged}");
        }
    }

    #[test]
    fn page_sizes_are_coerced() {
        assert_eq!((page_size(0, 100, 1000), page_size(5, 100, 1000), page_size(5000, 100, 1000)), (100, 5, 1000));
    }
}
