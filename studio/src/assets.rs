//! The files pages load, compiled into the binary: htmx (vendored, pinned,
//! see `assets/README.md`) and the stylesheet. They are served under
//! versioned names with a year-long `immutable` cache lifetime: a new
//! version gets a new name, so a browser never keeps a stale copy.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// htmx 2.0.4, `dist/htmx.min.js` of the npm package.
const HTMX: &[u8] = include_bytes!("../assets/htmx.min.js");
/// SHA-256 of [`HTMX`], as `assets/README.md` records it.
pub const HTMX_SHA256: &str = "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447";
/// The stylesheet.
const CSS: &[u8] = include_bytes!("../assets/studio.css");

/// Where pages load htmx from.
pub const HTMX_PATH: &str = "/assets/htmx-2.0.4.min.js";
/// Where pages load the stylesheet from (its name changes with the crate version).
pub const CSS_PATH: &str = concat!("/assets/studio-", env!("CARGO_PKG_VERSION"), ".css");

/// The asset at `path`, or 404.
pub fn serve(path: &str) -> Response {
    let (body, kind) = match path {
        HTMX_PATH => (HTMX, "text/javascript; charset=utf-8"),
        CSS_PATH => (CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_htmx_is_the_pinned_one() {
        let digest = ring::digest::digest(&ring::digest::SHA256, HTMX);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, HTMX_SHA256);
        let readme = include_str!("../assets/README.md");
        assert!(readme.contains(HTMX_SHA256) && readme.contains("2.0.4"));
        assert!(std::str::from_utf8(HTMX).unwrap().contains("2.0.4"));
    }

    #[test]
    fn assets_are_cached_for_long_and_unknown_ones_are_404() {
        let r = serve(HTMX_PATH);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert_eq!(serve(CSS_PATH).headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(serve("/assets/../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
