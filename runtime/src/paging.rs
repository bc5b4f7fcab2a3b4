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

/// A List call's paging, decoded: how many items, after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u32,
    /// The last key of the previous page; `None` for the first page.
    pub after: Option<String>,
}

/// One page of items and the token of the next (empty on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

impl PageRequest {
    /// Decodes `page_size` (0 → `default`, at most `max`) and `page_token`
    /// (`valid` checks the key it carries).
    pub fn parse(
        page_size_requested: u32,
        page_token: &str,
        (default, max): (u32, u32),
        valid: impl Fn(&str) -> bool,
    ) -> Result<Self, &'static str> {
        Ok(Self { size: page_size(page_size_requested, default, max), after: decode_token(page_token, valid)? })
    }

    /// How many rows to read: one more than a page, to know whether another follows.
    pub fn fetch_limit(&self) -> u64 {
        u64::from(self.size) + 1
    }

    /// The page of `rows` (read with [`Self::fetch_limit`]); `key` gives the
    /// key the next page starts after.
    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> &str) -> Page<T> {
        let next_page_token = if rows.len() > self.size as usize {
            rows.truncate(self.size as usize);
            encode_token(key(rows.last().expect("a full page")))
        } else {
            String::new()
        };
        Page { items: rows, next_page_token }
    }
}

impl<T> Page<T> {
    /// Cuts the page so its items' encoded sizes (`size`) add up to at most
    /// `budget` bytes — a response must fit the message limit however large
    /// its items are. At least one item stays; a cut page's token points
    /// after its last item (`key`), so nothing is skipped.
    pub fn fit(mut self, budget: usize, size: impl Fn(&T) -> usize, key: impl Fn(&T) -> &str) -> Self {
        let mut total = 0usize;
        let keep = self
            .items
            .iter()
            .position(|item| {
                total = total.saturating_add(size(item));
                total > budget
            })
            .map(|first_over| first_over.max(1))
            .unwrap_or(self.items.len());
        if keep < self.items.len() {
            self.items.truncate(keep);
            self.next_page_token = encode_token(key(self.items.last().expect("at least one item")));
        }
        self
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
    fn a_page_holds_at_most_size_items_and_points_after_the_last() {
        let request = PageRequest::parse(2, "", (10, 100), |_| true).unwrap();
        assert_eq!(request.fetch_limit(), 3);
        let page = request.page(vec!["a", "b", "c"], |s| s);
        assert_eq!(page.items, ["a", "b"]);
        assert_eq!(decode_token(&page.next_page_token, |_| true), Ok(Some("b".into())));
        let last = request.page(vec!["d"], |s| s);
        assert_eq!((last.items, last.next_page_token), (vec!["d"], String::new()));
        assert_eq!(PageRequest::parse(0, "%%", (10, 100), |_| true), Err(BAD_TOKEN));
    }

    #[test]
    fn pages_are_cut_to_fit_the_message_limit() {
        let page = Page { items: vec!["aaaa", "bbbb", "cccc"], next_page_token: String::new() };
        let cut = page.clone().fit(9, |s| s.len(), |s| s);
        assert_eq!(cut.items, ["aaaa", "bbbb"]);
        assert_eq!(decode_token(&cut.next_page_token, |_| true), Ok(Some("bbbb".into())));
        assert_eq!(page.clone().fit(100, |s| s.len(), |s| s), page, "a page that fits is unchanged");
        assert_eq!(page.fit(1, |s| s.len(), |s| s).items, ["aaaa"], "one item always goes out");
    }

    #[test]
    fn page_sizes_are_coerced() {
        assert_eq!((page_size(0, 100, 1000), page_size(5, 100, 1000), page_size(5000, 100, 1000)), (100, 5, 1000));
    }
}
