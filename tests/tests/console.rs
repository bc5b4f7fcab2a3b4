//! The web console in a real headless Chromium: it loads offline from the
//! binary, takes an API key (the same auth as every route), shows a workflow
//! started over REST appear live, approves its waiting step and sees it
//! complete, stamps a dropped file, validates stamped text and lists
//! namespaces and definitions — using only the public REST API and the
//! WebSocket. Screenshots of the main pages are saved under the build's
//! temporary directory (`console-screenshots/`).

use std::{path::PathBuf, time::Duration};

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, browser::Browser, http_request};
use serde_json::{Value, json};

const KEY: &str = "console-key";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_workflows_approves_and_stamps() {
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway];
    let env = [("GATEWAY_API_KEYS", KEY), ("OMNINODE_CLIENT_TOKEN", KEY), ("AGGREGATION_WINDOW_SIZE_MS", "200")];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &services, &env).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let rest = |method: &'static str, path: String, body: Value| async move {
        let headers = [("content-type", "application/json"), ("x-api-key", KEY)];
        let (code, _, text) = http_request(gateway, method, &path, &headers, &body.to_string()).await;
        assert!(code < 300, "{method} {path}: {code} {text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let definition = json!({"definition": {"name": "release-notes", "steps": [
        {"name": "review", "approval": {"description": "Read the notes"}},
        {"name": "hash", "hash": {}}
    ]}});
    rest("POST", "/v1/workflowDefinitions".into(), definition).await;

    let mut browser = Browser::launch().await;
    let base = format!("http://{gateway}/console");
    browser.goto(&base).await;
    browser.wait_for("document.querySelector('main').dataset.ready", Duration::from_secs(10)).await;
    // Without the key the API refuses; with it, the live events connect.
    browser.wait_for("document.querySelector('.error')?.textContent.includes('401')", Duration::from_secs(10)).await;
    browser
        .eval(&format!(
            "document.getElementById('key').value = '{KEY}'; document.getElementById('auth').requestSubmit(); true"
        ))
        .await;
    browser
        .wait_for("document.getElementById('status').textContent.endsWith('connected')", Duration::from_secs(15))
        .await;

    // Stamp a file dropped on the page.
    browser.goto(&format!("{base}#/stamp")).await;
    browser.wait_for("document.getElementById('drop')", Duration::from_secs(10)).await;
    browser
        .eval(
            "document.getElementById('stamp-ns').value = 'console.demo';
             const data = new DataTransfer();
             data.items.add(new File(['# Release notes\\n\\nVersion 2 is out.\\n'], 'notes.md', {type: 'text/markdown'}));
             document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
             true",
        )
        .await;
    let hash = browser.wait_for("document.getElementById('stamp-hash')?.textContent", Duration::from_secs(15)).await;
    assert_eq!(hash.as_str().unwrap().len(), 64, "{hash}");
    let stored = rest("GET", format!("/v1/namespaces/console.demo/stamps/{}", hash.as_str().unwrap()), json!({})).await;
    assert_eq!(stored["stamp"]["filePath"], "notes.md");
    browser.screenshot(&shots().join("stamp.png")).await;

    // Validate the stamped text.
    let stamped = rest(
        "POST",
        "/v1/namespaces/console.demo/stamps".into(),
        json!({"content": "# Release notes\n\nVersion 2 is out.\n", "filePath": "notes.md"}),
    )
    .await["stampedContent"]
        .clone();
    browser.goto(&format!("{base}#/validate")).await;
    browser.wait_for("document.getElementById('stamped')", Duration::from_secs(10)).await;
    browser
        .eval(&format!(
            "document.getElementById('stamped').value = {stamped}; document.getElementById('validate').requestSubmit(); true"
        ))
        .await;
    let verdict = browser.wait_for("document.getElementById('valid')?.textContent", Duration::from_secs(10)).await;
    assert_eq!(verdict, "Valid");

    // A workflow started over REST appears in the open list, live.
    browser.goto(&format!("{base}#/workflows?namespace=console.demo")).await;
    browser.wait_for("document.querySelector('#list table')", Duration::from_secs(10)).await;
    let started = rest(
        "POST",
        "/v1/namespaces/console.demo/workflows".into(),
        json!({"definition": "release-notes", "input": {"content": "v2 notes", "filePath": "notes.md"}}),
    )
    .await;
    let id = started["workflow"]["workflowId"].as_str().unwrap().to_owned();
    browser
        .wait_for(
            &format!("[...document.querySelectorAll('#list tr[data-id]')].some(r => r.dataset.id === '{id}' && r.textContent.includes('WAITING'))"),
            Duration::from_secs(15),
        )
        .await;
    browser.screenshot(&shots().join("workflows.png")).await;

    // Open it, approve the waiting step with a comment, and watch it complete.
    browser.eval(&format!("document.querySelector('#list tr[data-id=\"{id}\"]').click(); true")).await;
    browser.wait_for("document.getElementById('approve')", Duration::from_secs(10)).await;
    browser.screenshot(&shots().join("approval.png")).await;
    browser
        .eval(
            "document.getElementById('approver').value = 'alice';
             document.getElementById('comment').value = 'ship it';
             document.getElementById('approve').click(); true",
        )
        .await;
    browser.wait_for("document.getElementById('wf-state')?.textContent === 'COMPLETED'", Duration::from_secs(15)).await;
    let timeline = browser.eval("document.querySelector('.timeline').innerText").await;
    let timeline = timeline.as_str().unwrap();
    assert!(timeline.contains("review") && timeline.contains("by alice") && timeline.contains("ship it"), "{timeline}");
    browser.screenshot(&shots().join("workflow.png")).await;
    let workflow = rest("GET", format!("/v1/workflows/{id}"), json!({})).await;
    assert_eq!(workflow["workflow"]["state"], "WORKFLOW_STATE_COMPLETED");

    // Namespaces with their aggregates, and the definitions.
    browser.goto(&format!("{base}#/namespaces")).await;
    browser
        .wait_for("document.querySelector('section[aria-label=\"Namespace console.demo\"]')", Duration::from_secs(20))
        .await;
    browser.screenshot(&shots().join("namespaces.png")).await;
    browser.goto(&format!("{base}#/definitions?name=release-notes@1")).await;
    let shown = browser.wait_for("document.querySelector('#def pre')?.textContent", Duration::from_secs(10)).await;
    assert!(shown.as_str().unwrap().contains("\"review\""), "{shown}");
    browser.screenshot(&shots().join("definitions.png")).await;

    // Keyboard: every control has a label, and the drop zone is reachable.
    let unlabelled = browser
        .eval(
            "[...document.querySelectorAll('input, select, textarea')].filter(e => !e.labels?.length && !e.getAttribute('aria-label')).length",
        )
        .await;
    assert_eq!(unlabelled, json!(0));
    println!("screenshots in {}", shots().display());
    mesh.shutdown().await;
}
