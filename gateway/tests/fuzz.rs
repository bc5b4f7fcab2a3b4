//! Fuzz targets for the REST gateway's path-template matcher and JSON
//! transcoder, over every route of the contracts: every committed corpus
//! input, then a bounded number of generated ones. Properties: nothing
//! panics; a matched path yields exactly the template's variables; a bad body
//! is a `BadRequest`, never a crash.

use omninode_gateway::{
    rules,
    transcode::{UnknownFields, request_message},
};
use proptest::prelude::*;

fn routes() -> Vec<rules::Route> {
    let pool = rules::descriptor_pool();
    let services: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    rules::routes(&pool, &names).expect("the contracts' templates parse")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let inputs: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(!inputs.is_empty(), "the {target} corpus is empty");
    inputs
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
}

fn check_path(routes: &[rules::Route], path: &str) {
    for route in routes {
        if let Some(bindings) = route.template.matches(path) {
            let mut names: Vec<&str> = bindings.iter().map(|(name, _)| name.as_str()).collect();
            let mut expected = route.template.variables();
            names.sort_unstable();
            expected.sort_unstable();
            assert_eq!(names, expected, "{path}");
        }
    }
}

fn check_body(routes: &[rules::Route], query: Option<&str>, body: &[u8]) {
    for route in routes {
        // Ok or a BadRequest: both fine; a panic fails the test.
        for unknown in [UnknownFields::Ignore, UnknownFields::Reject] {
            let _ = request_message(route, &[], query, body, unknown);
        }
    }
}

#[test]
fn corpus_paths_and_bodies() {
    let routes = routes();
    for path in corpus("path_template") {
        check_path(&routes, &String::from_utf8_lossy(&path));
    }
    for body in corpus("json_transcoder") {
        check_body(&routes, Some("pageSize=5&namespace=a.b&unknown=%ff"), &body);
    }
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop_oneof![
            Just("content".to_owned()),
            Just("namespace".to_owned()),
            Just("format".to_owned()),
            Just("items".to_owned()),
            Just("input".to_owned()),
            Just("pageSize".to_owned()),
            Just("file_path".to_owned()),
            "[a-zA-Z_]{1,10}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(keys, inner, 0..5)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_path_matcher_never_panics(segments in proptest::collection::vec("[a-z0-9.:%_-]{0,12}|\\PC{0,6}", 0..7)) {
        let routes = routes();
        check_path(&routes, &format!("/{}", segments.join("/")));
        check_path(&routes, &format!("/v1/{}", segments.join("/")));
    }

    #[test]
    fn the_transcoder_never_panics(body in json(), raw in proptest::collection::vec(any::<u8>(), 0..64), query in "[a-zA-Z=&%0-9.]{0,40}") {
        let routes = routes();
        check_body(&routes, Some(&query), body.to_string().as_bytes());
        check_body(&routes, None, &raw);
    }
}
