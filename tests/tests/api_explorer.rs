//! `/docs` in a real headless Chromium: Swagger UI loads from the binary
//! (no network beyond the gateway), shows every operation grouped by service
//! with the contracts' descriptions, takes an API key through "Authorize",
//! and "Try it out" calls the API and shows the answer.

use std::time::Duration;

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, browser::Browser};

const KEY: &str = "explorer-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_explorer_documents_authorizes_and_tries_calls() {
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway];
    let env = [("GATEWAY_API_KEYS", KEY), ("OMNINODE_CLIENT_TOKEN", KEY)];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &services, &env).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();

    let mut browser = Browser::launch().await;
    browser.goto(&format!("http://{gateway}/docs")).await;
    browser.wait_for("document.querySelectorAll('.opblock').length >= 20", Duration::from_secs(20)).await;

    // Grouped by service, with the contracts' descriptions.
    let tags = browser.eval("[...document.querySelectorAll('.opblock-tag')].map(t => t.dataset.tag).join(',')").await;
    assert_eq!(tags.as_str(), Some("OrchestratorService,ReducerService,StampingService"), "{tags}");
    let summaries = browser.eval("document.body.innerText").await;
    let text = summaries.as_str().unwrap_or_default();
    assert!(text.contains("Normalises content, hashes it, stores a stamp record"), "the Stamp description");
    assert!(text.contains("/v1/hash:stream"), "the streamed hash route");
    // Everything came from the gateway itself.
    let foreign = browser
        .eval(&format!(
            "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('http://{gateway}')).length"
        ))
        .await;
    assert_eq!(foreign.as_i64(), Some(0), "no request left the gateway");

    // Authorize with the API key, then try ListNamespaces.
    browser.eval("document.querySelector('.btn.authorize').click(); true").await;
    browser.wait_for("!!document.querySelector('.auth-container input')", Duration::from_secs(10)).await;
    browser
        .eval(&format!(
            "const input = document.querySelector('.auth-container input');
             const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
             set.call(input, '{KEY}');
             input.dispatchEvent(new Event('input', {{bubbles: true}}));
             document.querySelector('.auth-container .modal-btn.auth.authorize').click();
             true"
        ))
        .await;
    browser.wait_for("!!document.querySelector('.auth-container .btn-done')", Duration::from_secs(10)).await;
    browser.eval("document.querySelector('.btn-done').click(); true").await;
    let ids = browser.eval("[...document.querySelectorAll('.opblock')].map(o => o.id).join(' ')").await;
    assert!(
        ids.as_str().unwrap_or_default().contains("operations-ReducerService-ReducerService_ListNamespaces"),
        "{ids}"
    );
    browser.eval("document.querySelector('#operations-ReducerService-ReducerService_ListNamespaces .opblock-summary-control').click(); true").await;
    browser
        .wait_for(
            "!!document.querySelector('#operations-ReducerService-ReducerService_ListNamespaces .execute')",
            Duration::from_secs(10),
        )
        .await;
    // Try-it-out is on by default; execute (once the block has settled).
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser
        .eval(
            "document.querySelector('#operations-ReducerService-ReducerService_ListNamespaces .execute').click(); true",
        )
        .await;
    let status = browser
        .wait_for(
            "document.querySelector('#operations-ReducerService-ReducerService_ListNamespaces .live-responses-table tbody .response-col_status')?.textContent.trim()",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(status.as_str(), Some("200"), "an authorized call succeeds: {status}");
    mesh.shutdown().await;
}
