//! `/docs`: the API explorer (Swagger UI, embedded at build time from the
//! crates.io package that vendors its release; no CDN, works offline).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// The page, its start-up script and Swagger UI's two files.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    ("docs.html", "text/html; charset=utf-8", include_bytes!("docs.html")),
    ("init.js", "text/javascript; charset=utf-8", include_bytes!("docs.js")),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui-bundle.js")),
    ),
    ("swagger-ui.css", "text/css; charset=utf-8", include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui.css"))),
];

/// Scripts and styles from this gateway only; calls to this gateway only.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// `/docs/{name}`.
pub async fn asset_named(name: String) -> Response {
    match name.as_str() {
        "docs.html" => (StatusCode::NOT_FOUND, "no such file").into_response(),
        name => asset(name).await,
    }
}

/// One asset by name.
pub async fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, ..)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut response = (*bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}
