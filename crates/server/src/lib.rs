//! The peerweb server as a library: HTTP routes, the WebSocket signaling driver and the
//! embedded web assets (browser SDK and demo app). This is the only crate that owns sockets.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use peerweb_server::{Server, ServerConfig};
//!
//! let server = Server::bind(ServerConfig::default()).await?;
//! println!("serving on http://{}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Routes:
//! - `GET /` and `/app.js`, `/app.css`: the demo app.
//! - `GET /sdk/peerweb.js`, `/sdk/peerweb.d.ts`: the browser SDK.
//! - `GET /ws`: signaling (protocol v1, `docs/protocol.md`).
//! - `GET /api/ice`: `{"iceServers": [...]}` for `RTCPeerConnection`.
//! - `GET /metrics`: Prometheus text. `GET /healthz`: `ok`.

mod config;
mod hub;
mod turn;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;

pub use config::{ConfigError, IceServer, ServerConfig};
pub use hub::Hub;
pub use turn::TurnService;

/// State shared by the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    hub: Hub,
    ice_servers: Arc<Vec<IceServer>>,
    turn: Option<Arc<TurnService>>,
}

impl AppState {
    /// Starts the signaling hub and, when configured, binds and starts STUN/TURN. Call inside
    /// a tokio runtime.
    pub fn new(cfg: &ServerConfig) -> std::io::Result<Self> {
        let turn = match cfg.turn_addr() {
            Some(addr) => Some(Arc::new(TurnService::start(cfg, addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("STUN/TURN on {addr}: {e}"))
            })?)),
            None => None,
        };
        let hub = Hub::spawn(cfg.core(), cfg.max_send_queue_bytes);
        Ok(Self {
            hub,
            ice_servers: Arc::new(cfg.ice_servers.clone()),
            turn,
        })
    }

    /// The built-in STUN/TURN server, if running.
    pub fn turn(&self) -> Option<&TurnService> {
        self.turn.as_deref()
    }
}

/// All HTTP routes of `peerweb serve`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/api/ice", get(ice))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(web::routes())
        .with_state(state)
}

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    // Frames up to four times the limit are read and refused with a clean 1009 close; the
    // hard cap stops a client from making the server buffer more than that.
    let hard_cap = state.hub.max_frame_bytes().saturating_mul(4);
    upgrade
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        // Idle connections should cost little: a small read buffer. Frames are written out
        // when the buffer passes WRITE_BATCH or at the flush that ends each batch.
        .read_buffer_size(4096)
        .write_buffer_size(hub::WRITE_BATCH)
        .on_upgrade(move |socket| state.hub.serve_socket(socket, peer))
}

async fn ice(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let mut servers = state.ice_servers.as_ref().clone();
    let mut body = serde_json::json!({});
    if let Some(turn) = state.turn() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        servers.extend(turn.ice_servers(host));
        // How long the credentials stay valid: clients fetch new ones before then.
        body["ttl"] = turn.credential_ttl().as_secs().into();
    }
    body["iceServers"] = serde_json::json!(servers);
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        axum::Json(body),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.hub.stats();
    let body = format!(
        "# HELP peerweb_signal_connections Open signaling WebSocket connections.\n\
         # TYPE peerweb_signal_connections gauge\n\
         peerweb_signal_connections {}\n\
         # HELP peerweb_signal_sessions Sessions held (connected or within the resume grace).\n\
         # TYPE peerweb_signal_sessions gauge\n\
         peerweb_signal_sessions {}\n\
         # HELP peerweb_signal_rooms Rooms with at least one member.\n\
         # TYPE peerweb_signal_rooms gauge\n\
         peerweb_signal_rooms {}\n\
         # HELP peerweb_signal_relayed_total Signal messages relayed between peers.\n\
         # TYPE peerweb_signal_relayed_total counter\n\
         peerweb_signal_relayed_total {}\n\
         # HELP peerweb_signal_errors_total Error frames sent to clients.\n\
         # TYPE peerweb_signal_errors_total counter\n\
         peerweb_signal_errors_total {}\n\
         # HELP peerweb_signal_server_closes_total Connections closed by the server.\n\
         # TYPE peerweb_signal_server_closes_total counter\n\
         peerweb_signal_server_closes_total {}\n",
        s.conns, s.sessions, s.rooms, s.signals_relayed, s.errors_sent, s.closes
    );
    let mut body = body;
    if let Some(turn) = state.turn() {
        turn_metrics(&mut body, &turn.stats());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn turn_metrics(out: &mut String, t: &peerweb_turn::Stats) {
    use std::fmt::Write as _;
    let mut metric = |name: &str, kind: &str, help: &str, labels: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP peerweb_turn_{name} {help}");
        let _ = writeln!(out, "# TYPE peerweb_turn_{name} {kind}");
        for (label, v) in labels {
            let _ = writeln!(out, "peerweb_turn_{name}{label} {v}");
        }
    };
    metric(
        "allocations",
        "gauge",
        "Live TURN allocations.",
        &[("", t.allocations as u64)],
    );
    metric(
        "permissions",
        "gauge",
        "Live TURN permissions.",
        &[("", t.permissions as u64)],
    );
    metric(
        "channels",
        "gauge",
        "Live TURN channel bindings.",
        &[("", t.channels as u64)],
    );
    metric(
        "allocations_total",
        "counter",
        "TURN allocations made.",
        &[("", t.allocations_total)],
    );
    metric(
        "relayed_bytes_total",
        "counter",
        "Application bytes relayed.",
        &[
            ("{direction=\"to_peer\"}", t.bytes_to_peers),
            ("{direction=\"to_client\"}", t.bytes_to_clients),
        ],
    );
    metric(
        "relayed_packets_total",
        "counter",
        "Packets relayed.",
        &[
            ("{direction=\"to_peer\"}", t.packets_to_peers),
            ("{direction=\"to_client\"}", t.packets_to_clients),
        ],
    );
    metric(
        "binding_requests_total",
        "counter",
        "STUN binding requests answered.",
        &[("", t.binding_requests)],
    );
    metric(
        "auth_failures_total",
        "counter",
        "Requests with wrong or expired credentials.",
        &[("", t.auth_failures)],
    );
    metric(
        "stale_nonces_total",
        "counter",
        "Requests answered 438 Stale Nonce.",
        &[("", t.stale_nonces)],
    );
    metric(
        "refusals_total",
        "counter",
        "Requests or packets refused, by reason.",
        &[
            ("{reason=\"peer_address\"}", t.refused_peer),
            ("{reason=\"quota\"}", t.refused_quota),
            ("{reason=\"bandwidth\"}", t.refused_bandwidth),
            ("{reason=\"challenge_rate\"}", t.refused_rate),
            ("{reason=\"no_permission\"}", t.no_permission),
        ],
    );
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Server {
    /// Binds the listen address and starts the signaling hub.
    pub async fn bind(cfg: ServerConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        Ok(Self {
            listener,
            state: AppState::new(&cfg)?,
        })
    }

    /// The STUN/TURN listener's address, when it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.state.turn().map(TurnService::local_addr)
    }

    /// The TURN-over-TLS listener's address, when configured.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.state.turn().and_then(TurnService::tls_addr)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then tells every client the server is going away.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let hub = self.state.hub.clone();
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Signaling frames are small and latency-bound: without TCP_NODELAY a frame written
        // while the previous one is unacknowledged waits for the peer's delayed ACK (~40 ms).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        let watcher = tokio::spawn(async move {
            shutdown.await;
            hub.shutdown().await;
            // Give the close frames a moment to leave.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = stop_tx.send(());
        });
        let res = server.await;
        watcher.abort();
        res
    }
}
