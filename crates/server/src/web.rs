//! The browser SDK and demo app, embedded in the binary (no build step, no files on disk).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $ty:expr) => {
        get(|| async {
            (
                [
                    (header::CONTENT_TYPE, $ty),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                include_str!(concat!("../../../web/", $path)),
            )
                .into_response()
        })
    };
}

/// Routes for the embedded assets.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", asset!("index.html", "text/html; charset=utf-8"))
        .route("/app.js", asset!("app.js", JS))
        .route("/app.css", asset!("app.css", "text/css; charset=utf-8"))
        .route("/sdk/peerweb.js", asset!("sdk/peerweb.js", JS))
        .route("/send", asset!("transfer/send.html", HTML))
        .route("/receive", asset!("transfer/receive.html", HTML))
        .route(
            "/transfer/transfer.css",
            asset!("transfer/transfer.css", CSS),
        )
        .route("/transfer/transfer.js", asset!("transfer/transfer.js", JS))
        .route("/transfer/blake3.js", asset!("transfer/blake3.js", JS))
        .route("/transfer/ui.js", asset!("transfer/ui.js", JS))
        .route("/transfer/send.js", asset!("transfer/send.js", JS))
        .route("/transfer/receive.js", asset!("transfer/receive.js", JS))
        .route(
            "/sdk/peerweb.d.ts",
            asset!("sdk/peerweb.d.ts", "application/typescript; charset=utf-8"),
        )
}
