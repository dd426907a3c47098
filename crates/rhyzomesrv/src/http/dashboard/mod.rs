//! `/ui`: the web dashboard, served by the daemon from assets compiled into the binary
//! (`include_str!`; plain HTML, CSS and JavaScript, no build step, nothing fetched from
//! elsewhere at run time).
//!
//! The assets are public (they hold no data); everything the page shows comes from the API
//! with the token the user enters, which the page keeps in `sessionStorage` and sends as a
//! bearer header, never in a URL or a cookie, so there is no CSRF to defend against. The
//! content security policy allows scripts, styles and requests from this origin only, and no
//! inline script at all.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the page may load and run: this origin only, no inline script or style attribute
/// needed, no framing (clickjacking), no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Assets change with the binary; a browser revalidates rather than keeping an
            // old page across an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The dashboard's routes, outside the API's authentication (see the module doc).
pub fn router() -> Router {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_handler_and_loads_only_its_own_assets() {
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains(" onclick="), "inline handler");
        for line in INDEX_HTML
            .lines()
            .filter(|l| l.contains("src=") || l.contains("href=\""))
        {
            assert!(
                !line.contains("http://") && !line.contains("https://") && !line.contains("//cdn"),
                "loads something from elsewhere: {line}"
            );
        }
        // The JavaScript never writes server data as HTML.
        assert!(!APP_JS.contains("innerHTML"), "innerHTML in app.js");
        let weight = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();
        assert!(weight < 300 * 1024, "page weight {weight} bytes");
    }
}
