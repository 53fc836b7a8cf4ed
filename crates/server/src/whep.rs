//! WHEP (the WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep) for peerweb cameras:
//! `POST /whep/<camera id>` with a player's SDP offer and `Authorization: Bearer <token of a
//! paired viewer>` answers `201 Created` with the camera's SDP answer and the session's
//! address in `Location`; `DELETE` on that address ends it.
//!
//! The bridge is a member of the camera's room like any viewer, on a connection the server
//! holds itself ([`crate::hub::LocalConn`]), under the same limits. It hands the token to the
//! camera as an app signal, and the offer only once the camera took it; the camera (its gate)
//! decides, the server keeps no viewer list. The session lives until `DELETE`, until the camera
//! leaves or refuses it (a revocation), or until the camera offers again: WHEP cannot carry a
//! renegotiation or an ICE restart, so a connection the camera had to restart is over and the
//! player posts a new offer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use peerweb_proto::ServerFrame;
use serde_json::json;
use tokio::sync::Notify;

use crate::AppState;
use crate::hub::LocalConn;

/// Largest SDP offer taken (a browser's, with its candidates, is a few KiB).
pub const MAX_OFFER_BYTES: usize = 32 * 1024;
/// WHEP sessions one server bridges at once.
pub const MAX_SESSIONS: usize = 256;
/// From the request to the camera's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest bearer token looked at (a camera's are 49 characters).
const MAX_TOKEN_BYTES: usize = 256;

/// The WHEP sessions being bridged, by the random id in their address.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Sessions {
    /// Takes a place for a new session, if there is one.
    fn reserve(&self) -> Option<(String, Arc<Notify>)> {
        let mut live = self.live.lock().ok()?;
        if live.len() >= MAX_SESSIONS {
            return None;
        }
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).ok()?;
        let id = data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase();
        let end = Arc::new(Notify::new());
        live.insert(id.clone(), end.clone());
        Some((id, end))
    }

    fn remove(&self, id: &str) -> Option<Arc<Notify>> {
        self.live.lock().ok()?.remove(id)
    }

    /// Sessions bridged now.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/whep/{camera}",
            post(create)
                .options(preflight)
                .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES)),
        )
        .route(
            "/whep/{camera}/{session}",
            axum::routing::delete(end).patch(patch).options(preflight),
        )
}

/// A refusal: status, a sentence for people, and extra headers.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.0, cors(), format!("{}\n", self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"peerweb camera\""),
            );
        }
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal(status, why.into())
}

/// Headers a player on another origin may read.
const EXPOSED: &str = "Location, WWW-Authenticate, Retry-After";

/// Players run on other origins (a home-automation page): cross-origin use is the point, and
/// the bearer token, not a cookie, is what authorizes.
fn cors() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED),
    ]
}

async fn preflight() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, DELETE, PATCH, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
            (header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
}

/// Whether `s` looks like a camera id (16 characters of lowercase base32).
fn is_camera_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    (!t.is_empty() && t.len() <= MAX_TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(t)
}

async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(camera): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let peer = crate::proxy::client_addr(peer, &headers, &state.trusted_proxies);
    if !is_camera_id(&camera) {
        return Err(refuse(StatusCode::NOT_FOUND, "no such camera"));
    }
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp_type {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer is sent as Content-Type: application/sdp",
        ));
    }
    let Some(token) = bearer(&headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "a WHEP player presents a camera viewer's token (Authorization: Bearer …; \
             `peerweb camera --whep NAME` prints one)",
        ));
    };
    let offer = std::str::from_utf8(&body)
        .ok()
        .filter(|s| s.starts_with("v=0"))
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "the body is not an SDP offer"))?;
    // A server that wants access tokens wants one here too, in the address (the
    // Authorization header carries the camera's token).
    let grant = match &state.auth {
        None => None,
        Some(a) => match a.grant(crate::auth::Auth::token(
            query.as_deref(),
            &HeaderMap::new(),
        )) {
            Ok((grant, _)) => Some(grant),
            Err(e) => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    format!("{e} (on this server a WHEP address carries ?access_token=)"),
                ));
            }
        },
    };
    let sessions = state.whep.clone();
    let Some((id, end)) = sessions.reserve() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WHEP sessions on this server; retry later",
        ));
    };
    let Some(mut conn) = state.hub.open_local(peer.ip(), grant).await else {
        sessions.remove(&id);
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    };
    let setup = tokio::time::timeout(ANSWER_TIMEOUT, bridge(&mut conn, &camera, token, offer));
    let (cam, answer) = match setup.await {
        Ok(Ok(v)) => v,
        Ok(Err(r)) => {
            sessions.remove(&id);
            return Err(r);
        }
        Err(_) => {
            sessions.remove(&id);
            return Err(refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "the camera did not answer in time",
            ));
        }
    };
    let location = format!("/whep/{camera}/{id}");
    tokio::spawn(hold(conn, cam, end, sessions, id));
    tracing::debug!(%camera, "WHEP session bridged");
    let mut r = (StatusCode::CREATED, cors(), answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Joins the camera's room, hands the camera the token, and, once it took it, the offer:
/// the camera's peer id and its answer.
async fn bridge(
    conn: &mut LocalConn,
    camera: &str,
    token: &str,
    offer: &str,
) -> Result<(String, String), Refusal> {
    let gone = || refuse(StatusCode::SERVICE_UNAVAILABLE, "the signaling hub is gone");
    let room = format!("camera-{camera}");
    let hello = json!({"type": "hello", "v": 1});
    let join = json!({"type": "join", "room": room, "meta": {"role": "whep"}});
    if !conn.send(hello.to_string()).await || !conn.send(join.to_string()).await {
        return Err(gone());
    }
    // The server's frames in order: welcome, joined, then the camera's signals.
    let mut cam: Option<String> = None;
    let mut sent_offer = false;
    loop {
        let Some(text) = conn.recv().await else {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server closed the bridge (too many connections from this address?)",
            ));
        };
        let Ok(frame) = ServerFrame::decode(&text) else {
            continue;
        };
        match frame {
            ServerFrame::Joined { peers, .. } => {
                let Some(c) = peers.into_iter().find(is_camera) else {
                    return Err(refuse(StatusCode::NOT_FOUND, "that camera is not online"));
                };
                let data = json!({"app": {"t": "whep", "v": 1, "token": token}});
                let signal = json!({"type": "signal", "to": c.id, "data": data});
                if !conn.send(signal.to_string()).await {
                    return Err(gone());
                }
                cam = Some(c.id);
            }
            ServerFrame::Error { code, message } => {
                let status = match code.as_str() {
                    "unauthorized" | "forbidden" => StatusCode::FORBIDDEN,
                    "room-full" | "rate-limited" | "too-many-rooms" => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::BAD_GATEWAY,
                };
                return Err(refuse(status, format!("{code}: {message}")));
            }
            ServerFrame::PeerLeft { id, .. } if cam.as_deref() == Some(id.as_str()) => {
                return Err(refuse(StatusCode::NOT_FOUND, "the camera went offline"));
            }
            ServerFrame::Signal { from, data, .. } if cam.as_deref() == Some(from.as_str()) => {
                let v: serde_json::Value = serde_json::from_str(data.get()).unwrap_or_default();
                if let Some(app) = v.get("app") {
                    match app["t"].as_str() {
                        Some("welcome") if !sent_offer => {
                            sent_offer = true;
                            let data = json!({"description": {"type": "offer", "sdp": offer}});
                            let signal = json!({"type": "signal", "to": from, "data": data});
                            if !conn.send(signal.to_string()).await {
                                return Err(gone());
                            }
                        }
                        Some("refused") => {
                            let why = app["reason"].as_str().unwrap_or("refused");
                            return Err(refuse(StatusCode::FORBIDDEN, why));
                        }
                        _ => {}
                    }
                } else if let Some(d) = v.get("description") {
                    if d["type"] == "answer"
                        && let Some(sdp) = d["sdp"].as_str()
                    {
                        return Ok((from, sdp.to_owned()));
                    }
                    return Err(refuse(
                        StatusCode::BAD_GATEWAY,
                        "the camera did not answer the offer",
                    ));
                }
                // Trickled candidates: the answer carries the camera's own; WHEP has no way
                // to pass later ones to the player, whose checks find the camera anyway.
            }
            _ => {}
        }
    }
}

/// Whether a member says it is the camera (its metadata's role).
fn is_camera(m: &peerweb_proto::Member) -> bool {
    m.meta
        .as_ref()
        .and_then(|meta| serde_json::from_str::<serde_json::Value>(meta.get()).ok())
        .is_some_and(|meta| meta["role"] == "camera")
}

/// Keeps a bridged session in the camera's room until it ends (see the module's doc); then
/// the bridge leaves and the camera drops the connection.
async fn hold(
    mut conn: LocalConn,
    cam: String,
    end: Arc<Notify>,
    sessions: Arc<Sessions>,
    id: String,
) {
    loop {
        tokio::select! {
            text = conn.recv() => {
                let Some(text) = text else { break };
                if ends(&text, &cam) {
                    break;
                }
            }
            () = end.notified() => break,
        }
    }
    sessions.remove(&id);
    tracing::debug!("WHEP session ended");
}

/// Whether a frame ends the session: the camera left, refused (revoked), or offered again.
fn ends(text: &str, cam: &str) -> bool {
    match ServerFrame::decode(text) {
        Ok(ServerFrame::PeerLeft { id, .. }) => id == cam,
        Ok(ServerFrame::Signal { from, data, .. }) if from == cam => {
            let v: serde_json::Value = serde_json::from_str(data.get()).unwrap_or_default();
            v["app"]["t"] == "refused" || v["description"]["type"] == "offer"
        }
        _ => false,
    }
}

async fn end(
    State(state): State<AppState>,
    Path((_camera, session)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    match state.whep.remove(&session) {
        Some(end) => {
            end.notify_one();
            Ok((StatusCode::OK, cors()).into_response())
        }
        None => Err(refuse(StatusCode::NOT_FOUND, "no such WHEP session")),
    }
}

/// Trickle ICE and ICE restarts by PATCH are not offered: the offer carries the player's
/// candidates, and a broken session is replaced by a new POST.
async fn patch() -> Response {
    let mut r = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        "this WHEP server takes no trickle or restart; send complete offers",
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids_and_bearers_are_checked() {
        assert!(is_camera_id("abcdefghijklmn23"));
        assert!(!is_camera_id("abcdefghijklmn2"));
        assert!(!is_camera_id("ABCDEFGHIJKLMN23"));
        assert!(!is_camera_id("abcdefghijklmn18"));
        assert!(!is_camera_id("../../etc/passwd"));
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ab.cd"),
        );
        assert_eq!(bearer(&h), Some("ab.cd"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(bearer(&h), None);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&long).unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn a_session_ends_when_the_camera_leaves_refuses_or_offers() {
        let cam = "c";
        assert!(ends(r#"{"type":"peer-left","room":"r","id":"c"}"#, cam));
        assert!(!ends(r#"{"type":"peer-left","room":"r","id":"x"}"#, cam));
        assert!(ends(
            r#"{"type":"signal","from":"c","data":{"app":{"t":"refused","reason":"revoked"}}}"#,
            cam
        ));
        assert!(ends(
            r#"{"type":"signal","from":"c","data":{"description":{"type":"offer","sdp":"v=0"}}}"#,
            cam
        ));
        assert!(!ends(
            r#"{"type":"signal","from":"c","data":{"candidate":{"candidate":"x"}}}"#,
            cam
        ));
        assert!(!ends("garbage", cam));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let ids: Vec<String> = (0..MAX_SESSIONS).map(|_| s.reserve().unwrap().0).collect();
        assert!(s.reserve().is_none());
        assert!(s.remove(&ids[0]).is_some());
        assert!(s.reserve().is_some());
    }
}
