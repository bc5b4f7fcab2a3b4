//! The TypeScript SDK in a real browser: a page in headless Chromium imports
//! `@omninode/client/web` (built from `sdks/typescript`, its dependencies
//! mapped from `node_modules` with an import map — no bundler, no CDN) and
//! runs a workflow, watches it and stamps over gRPC-Web, straight to the
//! gRPC servers, with CORS from `GATEWAY_CORS_ORIGINS`.

use std::{path::PathBuf, time::Duration};

use axum::{Router, http::Uri, response::IntoResponse};
use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, browser::Browser};
use serde_json::{Map, Value, json};

fn sdk() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdks/typescript")
}

/// The import map of the SDK's browser dependencies, from their package.json `exports`.
fn import_map() -> Value {
    let mut imports = Map::new();
    for package in ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-web"] {
        let manifest = sdk().join("node_modules").join(package).join("package.json");
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
            panic!("{} (run npm ci and npm run build in sdks/typescript): {e}", manifest.display())
        }))
        .unwrap();
        for (subpath, targets) in manifest["exports"].as_object().unwrap() {
            let Some(file) = targets["import"].as_str() else { continue };
            let specifier = format!("{package}{}", subpath.trim_start_matches('.'));
            imports.insert(specifier, json!(format!("/node_modules/{package}/{}", file.trim_start_matches("./"))));
        }
    }
    json!({ "imports": imports })
}

async fn serve_sdk(page: String, uri: Uri) -> impl IntoResponse {
    let path = uri.path().trim_start_matches('/');
    if path == "page.html" {
        return ([("content-type", "text/html")], page.into_bytes()).into_response();
    }
    let file = sdk().join(path);
    match (path.contains(".."), std::fs::read(&file)) {
        (false, Ok(bytes)) => {
            let kind = if path.ends_with(".js") { "text/javascript" } else { "application/octet-stream" };
            ([("content-type", kind)], bytes).into_response()
        }
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_runs_a_workflow_through_the_typescript_sdk() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer];
    let mesh = TestMesh::start_services(
        TestDatabase::new(Backend::Sqlite).await,
        &services,
        &[("GATEWAY_CORS_ORIGINS", &origin)],
    )
    .await;
    let endpoints = json!({
        "stamping": mesh.stamping_url(),
        "orchestrator": mesh.orchestrator_url(),
        "reducer": mesh.reducer_url(),
    });
    let page = format!(
        r##"<!doctype html><html><head><script type="importmap">{}</script></head><body>
<script type="module">
import {{ connect, orchestrator }} from "/dist/web.js";
const mesh = connect({endpoints});
try {{
  const workflow = await mesh.runWorkflow("browser.sdk", "# From a page\n");
  const states = [];
  for await (const update of mesh.watchWorkflow(workflow.workflowId)) states.push(orchestrator.WorkflowState[update.state]);
  const stamped = await mesh.stamp("browser.sdk", "# Stamped by a page\n", "page.md");
  let reason = "";
  try {{ await mesh.stamp("Bad Namespace", "x"); }} catch (error) {{ reason = error.reason; }}
  document.body.dataset.result = JSON.stringify({{ state: orchestrator.WorkflowState[workflow.state], states, hash: stamped.stamp.fileHash, reason }});
}} catch (error) {{
  document.body.dataset.error = String(error);
}}
</script></body></html>"##,
        import_map()
    );
    let app = Router::new().fallback(move |uri: Uri| serve_sdk(page.clone(), uri));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut browser = Browser::launch().await;
    browser.goto(&format!("{origin}/page.html")).await;
    let outcome = browser
        .wait_for(
            "document.body.dataset.result || (document.body.dataset.error && 'error: ' + document.body.dataset.error)",
            Duration::from_secs(30),
        )
        .await;
    let outcome = outcome.as_str().unwrap();
    let result: Value = serde_json::from_str(outcome).unwrap_or_else(|_| panic!("the page failed: {outcome}"));
    assert_eq!(result["state"], "COMPLETED", "{result}");
    assert_eq!(result["states"].as_array().unwrap().last().unwrap(), "COMPLETED", "{result}");
    assert_eq!(result["hash"].as_str().unwrap().len(), 64, "{result}");
    assert_eq!(result["reason"], "NAMESPACE_INVALID", "errors carry the reason in the browser too: {result}");
    mesh.shutdown().await;
}
