//! The browser SDK and demo app, embedded in the binary (no build step, no files on disk).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const JS: &str = "text/javascript; charset=utf-8";

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
        .route(
            "/sdk/peerweb.d.ts",
            asset!("sdk/peerweb.d.ts", "application/typescript; charset=utf-8"),
        )
}
