//! Fuzz target for the page-token decoder: every committed corpus input,
//! then a bounded number of generated ones. Properties: a token this service
//! did not issue is refused (never a panic, never a key that fails the
//! check), and every issued token decodes to its key.

use omninode_runtime::paging::{BAD_TOKEN, decode_token, encode_token};
use proptest::prelude::*;

fn is_uuid(key: &str) -> bool {
    key.len() == 36 && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(5000)
}

#[test]
fn corpus_tokens_decode_or_are_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/page_token");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let token = String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned();
        match decode_token(&token, is_uuid) {
            Ok(Some(key)) => assert!(is_uuid(&key)),
            Ok(None) => assert!(token.is_empty()),
            Err(err) => assert_eq!(err, BAD_TOKEN),
        }
        count += 1;
    }
    assert!(count >= 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn forged_tokens_never_reach_a_query(token in "\\PC{0,80}|[A-Za-z0-9_-]{0,80}") {
        if let Ok(Some(key)) = decode_token(&token, is_uuid) {
            prop_assert!(is_uuid(&key));
        }
    }

    #[test]
    fn issued_tokens_round_trip(key in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}") {
        prop_assert_eq!(decode_token(&encode_token(&key), is_uuid), Ok(Some(key)));
    }
}
