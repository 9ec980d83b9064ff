//! The web UI (`ui-graphql/`), built by `build.rs` and embedded: `/` serves its page, `/assets/…`
//! its scripts and styles (named by content hash, so cached for good).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// What the page may load and talk to: itself only (the API is on the same origin).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

fn asset(path: &str) -> Option<&'static [u8]> {
    UI_ASSETS
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| *bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn with_headers(mut response: Response, cache: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The UI's page (it routes by the URL's fragment, so every page is this one).
pub async fn index() -> Response {
    let page = asset("index.html").unwrap_or_default();
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    with_headers(response, "no-cache")
}

pub async fn assets(Path(path): Path<String>) -> Response {
    let path = format!("assets/{path}");
    match asset(&path) {
        Some(bytes) => with_headers(
            ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
            "public, max-age=31536000, immutable",
        ),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
