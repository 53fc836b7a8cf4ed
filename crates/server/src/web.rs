//! The browser SDK and the web app, embedded in the binary (no build step, no files on disk).
//!
//! Every page is one app: its HTML holds `<!--shell:head-->` and `<!--shell:header-->`, which
//! are filled in once at start-up with the shared head (stylesheet, manifest, icons, the
//! shell script) and the header with the navigation, the page's own entry marked current.

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};

use crate::AppState;

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const PNG: &str = "image/png";
const SVG: &str = "image/svg+xml";

/// The app's pages in its navigation: path and name.
const NAV: &[(&str, &str)] = &[
    ("/", "Rooms"),
    ("/call", "Call"),
    ("/send", "Send"),
    ("/receive", "Receive"),
    ("/watch", "Watch"),
    ("/status", "Status"),
];

const HEAD_MARK: &str = "<!--shell:head-->";
const HEADER_MARK: &str = "<!--shell:header-->";

/// What every page's head holds besides its charset, title and own stylesheet.
const SHELL_HEAD: &str = r##"<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="light dark">
<meta name="theme-color" content="#f4f6f8" media="(prefers-color-scheme: light)">
<meta name="theme-color" content="#0f1419" media="(prefers-color-scheme: dark)">
<link rel="manifest" href="/manifest.webmanifest">
<link rel="icon" href="/icons/icon.svg" type="image/svg+xml">
<link rel="apple-touch-icon" href="/icons/apple-touch-icon.png">
<link rel="stylesheet" href="/app.css">
<script src="/shell.js"></script>"##;

/// The header: the name, the navigation with `current` marked, the theme switch.
fn shell_header(current: &str) -> String {
    let links: String = NAV
        .iter()
        .map(|(path, name)| {
            let mark = if *path == current {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<a href="{path}"{mark}>{name}</a>"#)
        })
        .collect();
    format!(
        r#"<header class="top"><a class="brand" href="/" aria-label="peerweb home">peer<span>web</span></a><nav aria-label="Pages">{links}</nav><button id="theme" class="theme" type="button">◐ Auto</button></header>"#
    )
}

/// Page `src` with the shell filled in; `current` is its path in the navigation.
fn compose(src: &str, current: &str) -> String {
    src.replacen(HEAD_MARK, SHELL_HEAD, 1)
        .replacen(HEADER_MARK, &shell_header(current), 1)
}

/// A page asset of content type `ty`, revalidated on every load (the binary may change).
fn served(ty: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The route of a page of the app, composed once.
fn page(src: &'static str, current: &'static str) -> MethodRouter<AppState> {
    let html = Bytes::from(compose(src, current));
    get(move || {
        let html = html.clone();
        async move { served(HTML, html) }
    })
}

/// A share to the installed app (303) that reached the server: the service worker that takes
/// shares was not running yet. The body (the user's files) is never read.
async fn share_without_worker() -> Redirect {
    Redirect::to("/send?shared=lost")
}

macro_rules! asset {
    ($path:literal, $ty:expr) => {
        get(|| async { served($ty, include_str!(concat!("../../../web/", $path))) })
    };
}

macro_rules! binary {
    ($path:literal, $ty:expr) => {
        get(|| async { served($ty, &include_bytes!(concat!("../../../web/", $path))[..]) })
    };
}

macro_rules! html {
    ($path:literal) => {
        include_str!(concat!("../../../web/", $path))
    };
}

// `VENDOR`: the pages' libraries from web/package-lock.json (build.rs).
include!(concat!(env!("OUT_DIR"), "/vendor.rs"));

/// One module of the pages' libraries, by its path under `/vendor/`.
async fn vendor(Path(path): Path<String>) -> Response {
    let url = format!("/vendor/{path}");
    match VENDOR.binary_search_by(|(u, _)| u.cmp(&url.as_str())) {
        Ok(i) => served(JS, VENDOR[i].1),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The code words as a module, from the same list `peerweb send` draws from.
async fn words() -> Response {
    let list = serde_json::to_string(&peerweb_transfer::code::WORDS[..]).unwrap_or_default();
    served(
        JS,
        format!("// The code words of `peerweb send`, sorted.\nexport const WORDS = {list};\n"),
    )
}

/// Routes for the embedded assets.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", page(html!("index.html"), "/"))
        .route("/call", page(html!("call.html"), "/call"))
        .route("/call.css", asset!("call.css", CSS))
        .route("/call-page.js", asset!("call-page.js", JS))
        .route("/send", page(html!("transfer/send.html"), "/send"))
        .route("/receive", page(html!("transfer/receive.html"), "/receive"))
        .route("/watch", page(html!("watch.html"), "/watch"))
        .route("/watch.js", asset!("watch.js", JS))
        .route("/watch.css", asset!("watch.css", CSS))
        .route("/status", page(html!("status.html"), "/status"))
        .route("/share", post(share_without_worker))
        .route("/app.css", asset!("app.css", CSS))
        .route("/shell.js", asset!("shell.js", JS))
        .route("/sw.js", asset!("sw.js", JS))
        .route(
            "/manifest.webmanifest",
            asset!("manifest.webmanifest", "application/manifest+json"),
        )
        .route("/icons/icon.svg", asset!("icons/icon.svg", SVG))
        .route("/icons/icon-192.png", binary!("icons/icon-192.png", PNG))
        .route("/icons/icon-512.png", binary!("icons/icon-512.png", PNG))
        .route(
            "/icons/maskable-512.png",
            binary!("icons/maskable-512.png", PNG),
        )
        .route(
            "/icons/apple-touch-icon.png",
            binary!("icons/apple-touch-icon.png", PNG),
        )
        .route("/app.js", asset!("app.js", JS))
        .route("/rooms.css", asset!("rooms.css", CSS))
        .route("/auth.js", asset!("auth.js", JS))
        .route("/sdk/peerweb.js", asset!("sdk/peerweb.js", JS))
        .route("/sdk/call.js", asset!("sdk/call.js", JS))
        .route("/sdk/verify.js", asset!("sdk/verify.js", JS))
        .route("/sdk/trust.js", asset!("sdk/trust.js", JS))
        .route("/sdk/camera.js", asset!("sdk/camera.js", JS))
        .route("/sdk/swarm-tree.js", asset!("sdk/swarm-tree.js", JS))
        .route(
            "/sdk/swarm-manifest.js",
            asset!("sdk/swarm-manifest.js", JS),
        )
        .route("/sdk/swarm-wire.js", asset!("sdk/swarm-wire.js", JS))
        .route("/sdk/swarm.js", asset!("sdk/swarm.js", JS))
        .route("/sdk/swarm-sw.js", asset!("sdk/swarm-sw.js", JS))
        .route("/status.js", asset!("status.js", JS))
        .route("/status.css", asset!("status.css", CSS))
        .route(
            "/transfer/transfer.css",
            asset!("transfer/transfer.css", CSS),
        )
        .route("/transfer/transfer.js", asset!("transfer/transfer.js", JS))
        .route("/transfer/blake3.js", asset!("transfer/blake3.js", JS))
        .route("/transfer/words.js", get(words))
        .route("/transfer/spake2.js", asset!("transfer/spake2.js", JS))
        .route("/transfer/writer.js", asset!("transfer/writer.js", JS))
        .route("/vendor/{*path}", get(vendor))
        .route("/transfer/ui.js", asset!("transfer/ui.js", JS))
        .route("/transfer/send.js", asset!("transfer/send.js", JS))
        .route("/transfer/receive.js", asset!("transfer/receive.js", JS))
        .route(
            "/sdk/peerweb.d.ts",
            asset!("sdk/peerweb.d.ts", "application/typescript; charset=utf-8"),
        )
        .route(
            "/sdk/swarm.d.ts",
            asset!("sdk/swarm.d.ts", "application/typescript; charset=utf-8"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGES: &[(&str, &str)] = &[
        (html!("index.html"), "/"),
        (html!("call.html"), "/call"),
        (html!("transfer/send.html"), "/send"),
        (html!("transfer/receive.html"), "/receive"),
        (html!("watch.html"), "/watch"),
        (html!("status.html"), "/status"),
    ];

    #[test]
    fn every_page_gets_the_shell_with_itself_marked_current() {
        for (src, current) in PAGES {
            let html = compose(src, current);
            assert!(!html.contains("<!--shell:"), "{current}: a mark is left");
            assert!(
                html.contains(r#"<link rel="manifest""#),
                "{current}: no head"
            );
            assert_eq!(
                html.matches(r#"aria-current="page""#).count(),
                1,
                "{current}"
            );
            assert!(
                html.contains(&format!(r#"<a href="{current}" aria-current="page">"#)),
                "{current}: not marked"
            );
            for (path, _) in NAV {
                assert!(
                    html.contains(&format!(r#"<a href="{path}""#)),
                    "{current}: no {path}"
                );
            }
        }
    }
}
