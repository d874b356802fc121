//! What a browser loads: the test client page (`/`), the REST API docs (`/api/docs`), the
//! OpenAPI document (`/api/docs/openapi.json`) and their scripts and styles under `/assets/`.
//!
//! Every file is compiled into the binary (no runtime paths, nothing from a CDN: the page works
//! offline), including the official Socket.IO browser client, vendored in `gateway/assets/`.
//! The pages run under a Content-Security-Policy that allows scripts from this origin only and
//! no inline script, a second guard (after rendering everything as text) against injected
//! HTML. None of this needs authentication, in JWT mode too: the files are public, the data is
//! behind the REST API's and the socket's own checks.

use axum::body::Bytes;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub const OPENAPI_PATH: &str = "/api/docs/openapi.json";
pub const DOCS_PATH: &str = "/api/docs";

/// The test page may talk to another server (its "Server URL" field), so `connect-src` is wider
/// than `'self'`; scripts, styles and everything else come from this origin only.
const PAGE_CSP: &str = "default-src 'self'; connect-src 'self' http: https: ws: wss:; object-src 'none'; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const DOCS_CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                        frame-ancestors 'none'";

/// Our own files change with the binary: revalidate every time (they are small).
const OWN_FILE_CACHE: &str = "no-cache";
/// The vendored client changes only when it is upgraded.
const VENDORED_FILE_CACHE: &str = "public, max-age=604800";

/// One embedded file and how it is served.
#[derive(Clone)]
struct Asset {
    body: Bytes,
    content_type: &'static str,
    cache: &'static str,
    /// The Content-Security-Policy of an HTML page.
    csp: Option<&'static str>,
}

impl IntoResponse for Asset {
    fn into_response(self) -> Response {
        let mut headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static(self.content_type)),
            (CACHE_CONTROL, HeaderValue::from_static(self.cache)),
            (HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
            (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        ];
        if let Some(csp) = self.csp {
            headers.push((HeaderName::from_static("content-security-policy"), HeaderValue::from_static(csp)));
        }
        let mut response = self.body.into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value); // replaces the body's default content type
        }
        response
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const fn asset(
    body: &'static [u8],
    content_type: &'static str,
    cache: &'static str,
    csp: Option<&'static str>,
) -> Asset {
    Asset { body: Bytes::from_static(body), content_type, cache, csp }
}

const fn own(body: &'static [u8], content_type: &'static str) -> Asset {
    asset(body, content_type, OWN_FILE_CACHE, None)
}

const VENDORED_CLIENT: &str = "/assets/socket.io.min.js";

const TEST_PAGE: Asset = asset(include_bytes!("../assets/index.html"), HTML, OWN_FILE_CACHE, Some(PAGE_CSP));
const DOCS_PAGE: Asset = asset(include_bytes!("../assets/docs.html"), HTML, OWN_FILE_CACHE, Some(DOCS_CSP));

/// `(path, file)` of every static file.
const ASSETS: [(&str, Asset); 6] = [
    ("/", TEST_PAGE),
    (DOCS_PATH, DOCS_PAGE),
    ("/assets/client.js", own(include_bytes!("../assets/client.js"), JS)),
    ("/assets/docs.js", own(include_bytes!("../assets/docs.js"), JS)),
    ("/assets/style.css", own(include_bytes!("../assets/style.css"), CSS)),
    (VENDORED_CLIENT, asset(include_bytes!("../assets/socket.io.min.js"), JS, VENDORED_FILE_CACHE, None)),
];

/// Browsers ask for it; there is none (rather than a JSON 404 in the console).
const FAVICON: &str = "/favicon.ico";

/// Whether `route` is one of this module's: a page, a script, a style, the OpenAPI document.
/// The HTTP metrics count them as one route, `static`: what matters about them is whether they
/// are served, not which file.
pub(crate) fn is_static(route: &str) -> bool {
    route == OPENAPI_PATH || route == FAVICON || ASSETS.iter().any(|(path, _)| *path == route)
}

/// The routes of the static files and of the OpenAPI document.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let openapi = serde_json::to_vec_pretty(&crate::openapi::document())
        .expect("the OpenAPI document is plain data, which always serializes");
    let openapi =
        Asset { body: Bytes::from(openapi), content_type: "application/json", cache: OWN_FILE_CACHE, csp: None };
    ASSETS
        .into_iter()
        .chain([(OPENAPI_PATH, openapi)])
        .fold(Router::new(), |router, (path, asset)| router.route(path, get(move || std::future::ready(asset.clone()))))
        .route(FAVICON, get(|| std::future::ready(StatusCode::NO_CONTENT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &str {
        std::str::from_utf8(&asset.body).expect("UTF-8")
    }

    fn served(path: &str) -> Asset {
        ASSETS.into_iter().find(|(p, _)| *p == path).expect("served").1
    }

    #[test]
    fn pages_load_only_local_scripts_and_no_inline_script() {
        for page in [TEST_PAGE, DOCS_PAGE] {
            let html = text(&page);
            for tag in html.split("<script").skip(1) {
                let tag = tag.split_once("</script>").expect("closed script tag").0;
                let (attributes, body) = tag.split_once('>').expect("script tag");
                assert!(body.trim().is_empty(), "inline script: {body}");
                assert!(attributes.contains("src=\"/assets/"), "script not from /assets/: {attributes}");
            }
            assert!(!html.contains("http://") && !html.contains("https://"), "a page refers to another host");
            assert!(!html.contains(" style=") && !html.contains("<style"), "inline style (blocked by the CSP)");
        }
        let csp = TEST_PAGE.csp.expect("the test page has a CSP");
        assert!(csp.starts_with("default-src 'self';") && !csp.contains("unsafe-inline"));
    }

    #[test]
    fn every_local_file_a_page_names_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|(path, _)| *path).collect();
        for page in [TEST_PAGE, DOCS_PAGE] {
            for reference in text(&page).split("=\"/").skip(1) {
                let path = format!("/{}", reference.split_once('"').expect("quoted").0);
                let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
                assert!(served.contains(&path) || path == OPENAPI_PATH, "{path} is not served");
            }
        }
    }

    #[test]
    fn the_vendored_client_is_the_official_bundle_with_its_license() {
        let client = served(VENDORED_CLIENT);
        let client = text(&client);
        assert!(client.starts_with("/*!\n * Socket.IO v4."), "not the official socket.io-client bundle");
        assert!(client.contains("Released under the MIT License."));
    }

    #[test]
    fn scripts_render_data_as_text_only() {
        for (path, asset) in &ASSETS {
            if path.ends_with(".js") && *path != VENDORED_CLIENT {
                let script = text(asset);
                for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                    assert!(!script.contains(sink), "{path} uses {sink}");
                }
            }
        }
    }
}
