//! The browser dashboards: a landing page, the customer, staff and admin pages and their
//! assets (`web/`), embedded in the component at build time. They need no token; each page
//! asks for one and calls the public API with it.

use service_kit::http::{Request, Response, method_not_allowed, not_found};

/// One embedded file and where it is served.
struct File {
    /// The request path's segments joined with '/' ("" for the landing page).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A strong validator of `body`, computed at build time.
    etag: u64,
}

/// The [`File`] served at `$path` from `web/$source`.
macro_rules! embed {
    ($path:literal, $source:literal, $content_type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../web/", $source));
        File {
            path: $path,
            content_type: $content_type,
            body: BODY,
            etag: fnv1a(BODY),
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

const FILES: &[File] = &[
    embed!("", "index.html", HTML),
    embed!("customer", "customer.html", HTML),
    embed!("staff", "staff.html", HTML),
    embed!("admin", "admin.html", HTML),
    embed!("assets/app.css", "assets/app.css", CSS),
    embed!("assets/favicon.svg", "assets/favicon.svg", "image/svg+xml"),
    embed!("assets/api.js", "assets/api.js", JS),
    embed!("assets/sse.js", "assets/sse.js", JS),
    embed!("assets/session.js", "assets/session.js", JS),
    embed!("assets/ui.js", "assets/ui.js", JS),
    embed!("assets/customer.js", "assets/customer.js", JS),
    embed!("assets/staff.js", "assets/staff.js", JS),
    embed!("assets/admin.js", "assets/admin.js", JS),
];

/// Pages and scripts come from this origin only; the pages hold a bearer token.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Answers a request outside `/api/` and `/healthz`: an embedded file, else 404.
pub fn serve(request: &Request) -> Response {
    let path = request.segments().join("/");
    let Some(file) = FILES.iter().find(|file| file.path == path) else {
        return not_found();
    };
    if request.method != "GET" {
        return method_not_allowed();
    }
    let etag = format!("\"{:016x}\"", file.etag);
    let mut response = if request.header("if-none-match") == Some(etag.as_str()) {
        Response::empty(304)
    } else {
        Response {
            status: 200,
            headers: vec![("content-type".into(), file.content_type.into())],
            body: file.body.to_vec(),
        }
    };
    // Not fingerprinted: browsers revalidate every time, which costs a 304 when unchanged.
    response = response
        .with_header("cache-control", "no-cache")
        .with_header("etag", &etag)
        .with_header("x-content-type-options", "nosniff")
        .with_header("referrer-policy", "no-referrer");
    if file.content_type == HTML {
        response = response.with_header("content-security-policy", CONTENT_SECURITY_POLICY);
    }
    response
}

/// 64-bit FNV-1a of `bytes` (an ETag, not a security measure).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}
