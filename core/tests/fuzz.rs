//! Fuzz targets for the stamp parser and the normaliser: every committed
//! corpus input, then a bounded number of generated ones (the test command
//! runs them; `FUZZ_CASES` raises the count for a longer session).
//! Properties: nothing panics; normalising is idempotent; whatever content
//! is stamped validates, and a one-character edit does not.

use omninode_core::{
    StampFormat,
    hash::normalise,
    stamp::{StampFields, apply, render, strip_stamps},
    validate::{hash_content, validate},
};
use proptest::prelude::*;

fn corpus(target: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut inputs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the {target} corpus is empty");
    inputs
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
}

/// Text that looks like stamped content: stamp markers, newlines, unicode.
fn stampish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("# ONEX:".to_owned()),
        Just("uid=".to_owned()),
        Just(",hash=".to_owned()),
        Just(",ts=".to_owned()),
        Just("<!-- ONEX_METADATA_START -->".to_owned()),
        Just("<!-- ONEX_METADATA_END -->".to_owned()),
        Just("<!-- ONEX Metadata Stamp".to_owned()),
        Just("  hash: ".to_owned()),
        Just("-->".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("#!/bin/sh\n".to_owned()),
        "[0-9a-f]{0,64}",
        "\\PC{0,12}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn check_parser(content: &str) {
    let stripped = strip_stamps(content);
    assert!(stripped.content.len() <= content.len());
    let verdict = validate(content, None);
    assert_eq!(verdict.current_hash, hash_content(content).hash);
}

fn check_normaliser(content: &str) {
    let once = normalise(content);
    assert_eq!(normalise(&once), once, "normalising is idempotent");
    assert!(!once.contains("\n\n\n"));
}

#[test]
fn corpus_inputs_parse_and_normalise() {
    for input in corpus("stamp_parser") {
        check_parser(&input);
    }
    for input in corpus("normaliser") {
        check_normaliser(&input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_stamp_parser_never_panics(content in stampish()) {
        check_parser(&content);
    }

    #[test]
    fn normalising_is_idempotent(content in "\\PC{0,200}|[\\n\\r \\ta]{0,40}") {
        check_normaliser(&content);
    }

    #[test]
    fn stamped_content_validates_and_an_edit_does_not(content in "[a-z]\\PC{0,120}", rich in any::<bool>()) {
        let hashed = hash_content(&content);
        prop_assume!(!hashed.is_empty);
        let format = if rich { StampFormat::Rich } else { StampFormat::Lightweight };
        let fields = StampFields {
            uid: "u", hash: &hashed.hash, timestamp: "t", version: None, file_path: "f.txt", file_size: 1, content_type: "text/plain",
        };
        let stamped = apply(format, &hashed.stripped.content, &render(format, &fields));
        prop_assert!(validate(&stamped, Some(&hashed.hash)).is_valid());
        let edited = format!("{stamped}x");
        prop_assert!(!validate(&edited, Some(&hashed.hash)).is_valid());
    }
}
