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
//! - `GET /api/status`: connectivity totals and the last hour, for the `/status` page.

mod acme;
mod auth;
pub mod bus;
mod cluster;
mod config;
mod hub;
mod metrics;
mod proxy;
mod status;
mod tls;
mod turn;
mod url_frames;
mod web;
mod whep;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;

pub use acme::Challenge as AcmeChallenge;
pub use auth::{AuthError, Claims, MIN_SECRET_BYTES, mint as mint_token};
pub use config::{ConfigError, IceServer, ServerConfig};
pub use hub::Hub;
pub use tls::{HANDSHAKE_TIMEOUT, HANDSHAKES_PER_IP};
pub use turn::TurnService;

/// State shared by the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    hub: Hub,
    ice_servers: Arc<Vec<IceServer>>,
    /// Whether `/api/ice?for=swarm` includes relays.
    swarm_relay: bool,
    turn: Option<Arc<TurnService>>,
    tls: Option<Arc<tls::TlsSetup>>,
    auth: Option<Arc<auth::Auth>>,
    /// Proxies whose forwarding headers name the client.
    trusted_proxies: Arc<Vec<peerweb_turn::Cidr>>,
    /// The last hour of connectivity, minute by minute, for `/status`.
    history: Arc<std::sync::Mutex<status::History>>,
    /// WHEP sessions bridged to cameras.
    whep: Arc<whep::Sessions>,
}

impl AppState {
    /// Starts the signaling hub, the certificate's upkeep (files watched, or ACME) when the
    /// server speaks TLS, and, when configured, binds and starts STUN/TURN. Call inside a
    /// tokio runtime.
    pub async fn new(cfg: &ServerConfig) -> std::io::Result<Self> {
        let tls = tls::TlsSetup::from_config(cfg)?.map(Arc::new);
        let turn = match cfg.turn_addr() {
            Some(addr) => Some(Arc::new(
                TurnService::start(cfg, addr, tls.as_deref().map(|t| &t.tls)).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("STUN/TURN on {addr}: {e}"))
                })?,
            )),
            None => None,
        };
        let hub = start_hub(cfg, turn.as_deref()).await?;
        let state = Self {
            hub,
            ice_servers: Arc::new(cfg.ice_servers.clone()),
            swarm_relay: cfg.swarm_relay,
            turn,
            tls,
            trusted_proxies: Arc::new(cfg.proxy_blocks().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?),
            auth: (!cfg.auth_secrets.is_empty()).then(|| {
                Arc::new(auth::Auth::new(
                    &cfg.auth_secrets,
                    cfg.page_password.clone(),
                ))
            }),
            history: Arc::default(),
            whep: Arc::default(),
        };
        Ok(state)
    }

    /// The built-in STUN/TURN server, if running.
    pub fn turn(&self) -> Option<&TurnService> {
        self.turn.as_deref()
    }
}

/// The signaling hub on its cluster bus: Redis when configured, else one in memory.
async fn start_hub(cfg: &ServerConfig, turn: Option<&TurnService>) -> std::io::Result<Hub> {
    let mut core = cfg.core();
    core.node = match &cfg.node_name {
        Some(n) => n.clone(),
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b)
                .map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
            data_encoding::HEXLOWER.encode(&b)
        }
    };
    // What the other nodes learn of this one: where its TURN relays are.
    let info = turn
        .map(|t| format!("turn {}", t.local_addr()))
        .unwrap_or_default();
    let Some(url) = &cfg.redis else {
        let (bus, wakes) = bus::memory::MemoryBus::new().node(&core.node);
        return Ok(Hub::spawn(core, cfg.max_send_queue_bytes, bus, wakes, info));
    };
    let (bus, wakes) = bus::redis::RedisBus::connect(url, &cfg.redis_prefix, &core.node)
        .await
        .map_err(|e| std::io::Error::other(format!("cluster bus at {url}: {e}")))?;
    if cfg.turn && cfg.turn_secrets.is_empty() {
        tracing::warn!(
            "several nodes without a shared TURN secret (--turn-secret): each node's TURN \
             credentials work on that node only"
        );
    }
    tracing::info!(node = %core.node, "on the cluster bus at {url}");
    Ok(Hub::spawn(core, cfg.max_send_queue_bytes, bus, wakes, info))
}

/// All HTTP routes of `peerweb serve`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/api/ice", get(ice))
        .route("/api/auth", get(auth_info).post(page_login))
        .route("/metrics", get(metrics::metrics))
        .route("/api/status", get(status::api))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(web::routes())
        .merge(whep::routes())
        .with_state(state)
}

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let peer = proxy::client_addr(peer, &headers, &state.trusted_proxies);
    // With auth on, a connection without a good token is told why (browsers cannot read the
    // status of a refused upgrade) and closed with 4401; the core never sees it.
    let grant = match &state.auth {
        None => None,
        Some(a) => match a.grant(auth::Auth::token(query.as_deref(), &headers)) {
            Ok((grant, claims)) => {
                tracing::debug!(sub = ?claims.sub, room = %claims.room, "authorized");
                Some(grant)
            }
            Err(e) => return upgrade.on_upgrade(move |s| refuse(s, e)),
        },
    };
    // Frames up to four times the limit are read and refused with a clean 1009 close; the
    // hard cap stops a client from making the server buffer more than that.
    let hard_cap = state.hub.max_frame_bytes().saturating_mul(4);
    let first = url_frames::parse(query.as_deref(), state.hub.max_frame_bytes());
    let taken = first.is_some();
    let mut response = upgrade
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        // Idle connections should cost little: a small read buffer. Frames are written out
        // when the buffer passes WRITE_BATCH or at the flush that ends each batch.
        .read_buffer_size(4096)
        .write_buffer_size(hub::WRITE_BATCH)
        .on_upgrade(move |socket| {
            state
                .hub
                .serve_socket(socket, peer, grant, first.unwrap_or_default())
        });
    if taken {
        response.headers_mut().insert(
            url_frames::TAKEN_HEADER,
            axum::http::HeaderValue::from_static("taken"),
        );
    }
    response
}

/// Tells a WebSocket without a good access token why, and closes it with 4401.
async fn refuse(mut socket: axum::extract::ws::WebSocket, why: auth::AuthError) {
    use axum::extract::ws::{CloseFrame, Message};
    let frame = peerweb_proto::ServerMsg::Error {
        code: peerweb_proto::ErrorCode::Unauthorized,
        message: &why.to_string(),
    }
    .encode();
    let _ = socket.send(Message::Text(frame.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: peerweb_proto::close::UNAUTHORIZED,
            reason: "unauthorized".into(),
        })))
        .await;
    // The client's `hello` is already on its way: without the closing handshake Firefox
    // discards the error frame above, and the page cannot say why it was refused.
    hub::await_client_close(&mut socket).await;
}

async fn ice(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> axum::response::Response {
    let peer = proxy::client_addr(peer, &headers, &state.trusted_proxies);
    if let Some(a) = &state.auth
        && let Err(e) = a.relay(peer.ip(), auth::Auth::token(query.as_deref(), &headers))
    {
        let status = match e {
            auth::AuthError::RateLimited => axum::http::StatusCode::TOO_MANY_REQUESTS,
            auth::AuthError::NoRelay => axum::http::StatusCode::FORBIDDEN,
            _ => axum::http::StatusCode::UNAUTHORIZED,
        };
        let code = peerweb_proto::ErrorCode::Unauthorized.as_str();
        let body = serde_json::json!({ "error": code, "message": e.to_string() });
        return (
            status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            axum::Json(body),
        )
            .into_response();
    }
    let mut servers = state.ice_servers.as_ref().clone();
    let mut body = serde_json::json!({});
    if let Some(turn) = state.turn() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        servers.extend(turn.ice_servers(host));
        // How long the credentials stay valid: clients fetch new ones before then.
        body["ttl"] = turn.credential_ttl().as_secs().into();
    }
    // For a swarm's connections (`?for=swarm`), relays only where the operator allows them.
    let for_swarm = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "for=swarm"));
    if for_swarm && !state.swarm_relay {
        servers = stun_only(servers);
    }
    body["iceServers"] = serde_json::json!(servers);
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// The STUN part of ICE server entries: relay URLs (`turn:`, `turns:`) and credentials gone.
fn stun_only(servers: Vec<IceServer>) -> Vec<IceServer> {
    servers
        .into_iter()
        .filter_map(|s| {
            let urls: Vec<String> = s
                .urls
                .into_iter()
                .filter(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
                .collect();
            (!urls.is_empty()).then_some(IceServer {
                urls,
                username: None,
                credential: None,
            })
        })
        .collect()
}

/// What the bundled pages need to know: whether tokens are required, and whether a page
/// password can get one.
async fn auth_info(State(state): State<AppState>) -> impl IntoResponse {
    let body = serde_json::json!({
        "required": state.auth.is_some(),
        "pageLogin": state.auth.as_ref().is_some_and(|a| a.has_page_login()),
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body))
}

#[derive(Debug, serde::Deserialize)]
struct Login {
    password: String,
    room: String,
}

/// `POST /api/auth {"password", "room"}`: the page password buys a token for one room.
async fn page_login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let peer = proxy::client_addr(peer, &headers, &state.trusted_proxies);
    use axum::http::StatusCode;
    let reply = |status: StatusCode, body: serde_json::Value| {
        (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(body),
        )
            .into_response()
    };
    let Some(auth) = &state.auth else {
        return reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no-auth", "message": "this server needs no token"}),
        );
    };
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "bad-request", "message": "expected {\"password\", \"room\"}"}),
        );
    };
    match auth.page_login(peer.ip(), &login.password, &login.room) {
        Ok(token) => reply(
            StatusCode::OK,
            serde_json::json!({"token": token, "ttl": auth::PAGE_TOKEN_TTL.as_secs()}),
        ),
        Err(e) => {
            let status = match e {
                auth::LoginError::NoPageLogin => StatusCode::FORBIDDEN,
                auth::LoginError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                auth::LoginError::BadRoom => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNAUTHORIZED,
            };
            reply(
                status,
                serde_json::json!({"error": "unauthorized", "message": e.to_string()}),
            )
        }
    }
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    redirect: Option<tokio::net::TcpListener>,
    state: AppState,
    drain: std::time::Duration,
    handshakes_per_ip: usize,
}

impl Server {
    /// Binds the listen address (and the HTTP redirect one), loads the certificate or starts
    /// ACME, and starts the signaling hub.
    pub async fn bind(cfg: ServerConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let redirect = match cfg.http_redirect_listen {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("HTTP redirect listener on {a}: {e}"))
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            redirect,
            state: AppState::new(&cfg).await?,
            drain: std::time::Duration::from_secs(cfg.drain_secs),
            handshakes_per_ip: cfg.tls_handshakes_per_ip,
        })
    }

    /// Whether the web server speaks HTTPS.
    pub fn is_https(&self) -> bool {
        self.state.tls.is_some()
    }

    /// The STUN/TURN listener's address, when it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.state.turn().map(TurnService::local_addr)
    }

    /// The TURN-over-TLS listener's address, when configured.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.state.turn().and_then(TurnService::tls_addr)
    }

    /// The plain-HTTP redirect listener's address, when configured.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
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
        let drain = self.drain;
        let https_port = self.local_addr().port();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let redirect = self.redirect.map(|l| {
            let acme = self
                .state
                .tls
                .as_ref()
                .and_then(|t| t.acme.as_ref())
                .map(|a| a.resolver.clone());
            let app = redirect_router(acme, https_port);
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
        });
        let tls = self.state.tls.as_ref().map(|t| t.tls.clone());
        let sampler = status::spawn_sampler(self.state.clone());
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let watcher = tokio::spawn(async move {
            shutdown.await;
            // Drain: accept no more, tell every WebSocket to reconnect (1001; clients resume
            // their sessions elsewhere or when we are back), and wait for them to go, at most
            // `drain` (in-flight HTTP requests finish in the meantime).
            let _ = stop_tx.send(true);
            hub.shutdown().await;
            let until = tokio::time::Instant::now() + drain;
            while hub.live() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let draining = stop_rx.clone();
        let stop = stopped(stop_rx);
        // Signaling frames are small and latency-bound: without TCP_NODELAY a frame written
        // while the previous one is unacknowledged waits for the peer's delayed ACK (~40 ms).
        // (The TLS listener sets it before the handshake.)
        let res = match tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(self.listener, tls, self.handshakes_per_ip)?
                    .tap_io(|_| {});
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                let listener = self.listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        // The listener stops first; the WebSockets (upgraded, so not its to wait for) drain.
        if *draining.borrow() {
            let _ = watcher.await;
        } else {
            watcher.abort();
        }
        if let Some(r) = redirect {
            r.abort();
        }
        sampler.abort();
        res
    }
}

/// The plain-HTTP listener: ACME's HTTP-01 challenge, and a permanent redirect to HTTPS for
/// everything else.
fn redirect_router(
    acme: Option<Arc<rustls_acme::ResolvesServerCertAcme>>,
    https_port: u16,
) -> Router {
    use axum::extract::{Path, Request};
    use axum::http::StatusCode;
    use axum::response::Response;
    let challenge = move |Path(token): Path<String>| {
        let acme = acme.clone();
        async move {
            match acme.and_then(|a| a.get_http_01_key_auth(&token)) {
                Some(key_auth) => key_auth.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let redirect = move |req: Request| async move {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(turn::host_part)
            .unwrap_or("localhost")
            .to_owned();
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let to = format!("https://{host}{port}{path}");
        match header::HeaderValue::from_str(&to) {
            Ok(v) => Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(header::LOCATION, v)
                .body(axum::body::Body::empty())
                .unwrap_or_else(|_| StatusCode::BAD_REQUEST.into_response()),
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        }
    };
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
}
