//! The browser SDK and demo app, embedded in the binary (no build step, no files on disk).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

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

macro_rules! asset {
    ($path:literal, $ty:expr) => {
        get(|| async { served($ty, include_str!(concat!("../../../web/", $path))) })
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
        .route("/", asset!("index.html", "text/html; charset=utf-8"))
        .route("/app.js", asset!("app.js", JS))
        .route("/auth.js", asset!("auth.js", JS))
        .route("/app.css", asset!("app.css", "text/css; charset=utf-8"))
        .route("/sdk/peerweb.js", asset!("sdk/peerweb.js", JS))
        .route("/status", asset!("status.html", HTML))
        .route("/status.js", asset!("status.js", JS))
        .route("/status.css", asset!("status.css", CSS))
        .route("/send", asset!("transfer/send.html", HTML))
        .route("/receive", asset!("transfer/receive.html", HTML))
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
}
