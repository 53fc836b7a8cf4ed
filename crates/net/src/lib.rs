//! The native peer's driver: tokio sockets and timers around the sans-IO [`Client`].
//!
//! [`Node::join`] gathers candidates (a UDP socket per usable interface address; the
//! server-reflexive address of each through the server's STUN; relayed addresses through its
//! TURN over UDP and TCP, and over TLS when those give none, with the short-lived credentials
//! of `GET /api/ice`), connects the signaling
//! WebSocket (reconnecting with backoff, resuming the same peer id, without touching live
//! peer connections), and runs one task that owns all of it. The application talks to that
//! task through [`Node`]: events in order, sends with backpressure.
//!
//! ```no_run
//! # async fn demo() -> Result<(), peerweb_net::Error> {
//! use peerweb_net::{Node, Options};
//! use peerweb_peer::Event;
//!
//! let mut node = Node::join(Options::new("http://127.0.0.1:8080", "lobby")).await?;
//! while let Some(ev) = node.next_event().await {
//!     if let Event::Open { peer } = ev {
//!         node.send(&peer, None, false, b"hello".to_vec()).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peerweb_peer::{
    Candidate, ChannelOptions, Client, Event, Output, Path, PeerState, Protocol, Settings,
};
use peerweb_turn::client::{Client as TurnClient, Event as TurnEvent, Transport};
use peerweb_turn::stun::{Builder, Class, Message, attr, method};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Socket buffer size asked for each UDP socket (the kernel may cap it).
pub const UDP_BUFFER: usize = 4 << 20;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per wake-up before str0m is polled again.
const BATCH: usize = 64;
/// How long leaving waits for sent messages to be acknowledged.
const LEAVE_DRAIN: Duration = Duration::from_secs(10);
/// How long [`Node::join`] waits for the server to confirm the join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff of the signaling WebSocket.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// STUN binding retransmissions (to the server's STUN) before giving up on srflx.
const STUN_SENDS: u32 = 5;
/// When a peer's path goes down, our own addresses are checked again (a new STUN binding,
/// a TURN refresh: after a NAT dropped its mappings both have changed) at most this often.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// A TURN allocation that was lost is replaced (fresh credentials from `/api/ice`) at once,
/// then after waits doubling from the first to the second while they keep being lost.
const REALLOC_BACKOFF: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));

/// What a native peer needs to join a room.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of `peerweb serve`: `http://`/`ws://`, or `https://`/`wss://` (TLS, its
    /// certificate checked against Mozilla's roots and [`Options::ca`]).
    pub server: String,
    pub room: String,
    pub settings: Settings,
    /// Offer loopback addresses as host candidates (tests on one machine).
    pub allow_loopback: bool,
    /// Only these interfaces (by name) give host candidates; empty: all.
    pub interfaces: Vec<String>,
    /// These interfaces never do.
    pub deny_interfaces: Vec<String>,
    /// Ask the server's STUN for server-reflexive candidates.
    pub stun: bool,
    /// Allocate relayed candidates on the server's TURN (over UDP, TCP and TLS, as offered).
    pub turn: bool,
    /// Extra CA certificates (PEM) trusted, besides Mozilla's roots, for the server's HTTPS
    /// and for `turns:` (a private CA).
    pub ca: Option<std::path::PathBuf>,
    /// Access token, for servers that require one (`peerweb token` mints them).
    pub token: Option<String>,
}

impl Options {
    pub fn new(server: &str, room: &str) -> Self {
        Options {
            server: server.to_owned(),
            room: room.to_owned(),
            settings: Settings::default(),
            allow_loopback: false,
            interfaces: Vec::new(),
            deny_interfaces: Vec::new(),
            stun: true,
            turn: true,
            ca: None,
            token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "bad server address {0:?}: expected http://host[:port] or https://host[:port] (or ws://, wss://)"
    )]
    BadUrl(String),
    #[error("cannot use the CA certificates in {path}: {why}")]
    Ca { path: String, why: String },
    #[error("cannot reach the signaling server at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("the server refused to join: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the server did not confirm the join within {0:?}")]
    JoinTimeout(Duration),
    #[error("no usable network address (use --allow-loopback to include loopback)")]
    NoAddress,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Peer(#[from] peerweb_peer::Error),
    #[error("the node has stopped")]
    Stopped,
}

/// One remote peer as [`Node::status`] reports it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub id: String,
    pub state: PeerState,
    pub open: bool,
    pub path: Option<Path>,
}

enum Cmd {
    Send {
        peer: String,
        label: Option<String>,
        binary: bool,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Open {
        peer: String,
        label: String,
        opts: ChannelOptions,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Status(oneshot::Sender<Vec<PeerStatus>>),
    Fingerprints(String, oneshot::Sender<Option<(String, Option<String>)>>),
    Buffered(String, Option<String>, oneshot::Sender<usize>),
    Media {
        video: bool,
        rtp_time: u64,
        data: Arc<[u8]>,
    },
    Sending(String, oneshot::Sender<Vec<(String, &'static str)>>),
    Leave(oneshot::Sender<()>),
}

/// Writes media to every connected peer of a [`Node`], from any task.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    cmds: mpsc::Sender<Cmd>,
}

impl MediaHandle {
    /// As [`Node::write_media`]; `Err` once the node stopped.
    pub async fn write(&self, video: bool, rtp_time: u64, data: Arc<[u8]>) -> Result<(), Error> {
        self.cmds
            .send(Cmd::Media {
                video,
                rtp_time,
                data,
            })
            .await
            .map_err(|_| Error::Stopped)
    }
}

/// A native peer in a room; the driver task runs until [`Node::leave`] or drop.
#[derive(Debug)]
pub struct Node {
    id: String,
    cmds: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<Event>,
    early: VecDeque<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Gathers host candidates, connects signaling and joins the room; returns once the
    /// server confirmed the join (the `Welcome` and `Joined` events are still delivered).
    pub async fn join(opts: Options) -> Result<Node, Error> {
        let mut urls = Urls::parse(&opts.server)?;
        urls.token = opts.token.clone();
        let trust = Trust::load(opts.ca.as_deref())?;
        let socks = bind_host_sockets(&opts)?;
        let ws = connect_ws(&urls.ws_url(), &trust).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, mut ev_rx) = mpsc::channel(4096);
        let now = Instant::now().into_std();
        let mut client = Client::new(now, &opts.room, opts.settings.clone());
        for s in &socks {
            let addr = s.local_addr()?;
            if let Ok(c) = Candidate::host(addr, "udp") {
                client.add_local_candidate(now, c);
            }
        }
        let (net_tx, net_rx) = mpsc::channel(1024);
        let mut by_addr = HashMap::new();
        for s in socks {
            let s = Arc::new(s);
            let local = s.local_addr()?;
            spawn_reader(s.clone(), local, net_tx.clone());
            by_addr.insert(local, s);
        }
        let driver = Driver {
            client,
            urls,
            trust,
            opts,
            socks: by_addr,
            net_tx,
            ws: None,
            ws_conn: None,
            backoff: BACKOFF_MIN,
            reconnect_at: None,
            stun: Vec::new(),
            turns: Vec::new(),
            deferred_tls: None,
            held_relay: None,
            next_turn_id: 0,
            stun_server: None,
            srflx: HashMap::new(),
            ice_rx: None,
            rechecked_at: None,
            realloc_at: None,
            realloc_wait: Duration::ZERO,
            blocked: VecDeque::new(),
            leaving: None,
            events: ev_tx,
            tid: 0,
        };
        let task = tokio::spawn(driver.run(ws, cmd_rx, net_rx));
        // Wait for the join to be confirmed (or refused).
        let mut early = VecDeque::new();
        let mut id = String::new();
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let ev = tokio::time::timeout_at(deadline, ev_rx.recv())
                .await
                .map_err(|_| Error::JoinTimeout(JOIN_TIMEOUT))?
                .ok_or(Error::Stopped)?;
            match &ev {
                Event::Welcome { id: me, .. } => id = me.clone(),
                Event::Error { code, message }
                    if matches!(
                        code.as_str(),
                        "room-full"
                            | "too-many-rooms"
                            | "invalid-room"
                            | "server-full"
                            | "unauthorized"
                            | "forbidden"
                    ) =>
                {
                    task.abort();
                    return Err(Error::Refused {
                        code: code.clone(),
                        message: message.clone(),
                    });
                }
                _ => {}
            }
            let joined = matches!(ev, Event::Joined { .. });
            early.push_back(ev);
            if joined {
                break;
            }
        }
        Ok(Node {
            id,
            cmds: cmd_tx,
            events: ev_rx,
            early,
            task: Some(task),
        })
    }

    /// Our peer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event; `None` once the driver stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        if let Some(e) = self.early.pop_front() {
            return Some(e);
        }
        self.events.recv().await
    }

    /// Sends `data` on the default channel (`label` `None`) or a named one. Waits while the
    /// peer's send window is full: this is the backpressure.
    pub async fn send(
        &self,
        peer: &str,
        label: Option<&str>,
        binary: bool,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Send {
            peer: peer.to_owned(),
            label: label.map(str::to_owned),
            binary,
            data,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Opens a named channel to `peer` (the remote sees it as a new data channel).
    pub async fn open_channel(
        &self,
        peer: &str,
        label: &str,
        opts: ChannelOptions,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Open {
            peer: peer.to_owned(),
            label: label.to_owned(),
            opts,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Every known peer with its state and path.
    pub async fn status(&self) -> Result<Vec<PeerStatus>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Status(reply)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// DTLS fingerprints (ours, theirs) of the connection to `peer`.
    pub async fn fingerprints(
        &self,
        peer: &str,
    ) -> Result<Option<(String, Option<String>)>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Fingerprints(peer.to_owned(), reply)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Bytes not yet acknowledged on a channel to `peer`.
    pub async fn buffered(&self, peer: &str, label: Option<&str>) -> Result<usize, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Buffered(
            peer.to_owned(),
            label.map(str::to_owned),
            reply,
        ))
        .await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// In a call ([`peerweb_peer::Settings::media`]): one frame to every connected peer —
    /// an H.264 access unit (Annex B) at a 90 kHz `rtp_time`, or an Opus packet at 48 kHz.
    pub async fn write_media(
        &self,
        video: bool,
        rtp_time: u64,
        data: Arc<[u8]>,
    ) -> Result<(), Error> {
        self.cmd(Cmd::Media {
            video,
            rtp_time,
            data,
        })
        .await
    }

    /// A handle that writes media from another task (a paced file source).
    pub fn media_handle(&self) -> MediaHandle {
        MediaHandle {
            cmds: self.cmds.clone(),
        }
    }

    /// Our sending media lines to `peer`: (mid, label), for the call state.
    pub async fn sending(&self, peer: &str) -> Result<Vec<(String, &'static str)>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Sending(peer.to_owned(), reply)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Leaves the room once what was sent is acknowledged (at most 10 s), so nothing accepted
    /// by [`Node::send`] is lost; others see peer-left at once; releases the TURN allocation
    /// and stops the driver.
    pub async fn leave(mut self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd(Cmd::Leave(reply)).await.is_ok() {
            let _ = tokio::time::timeout(LEAVE_DRAIN + Duration::from_secs(2), rx).await;
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn cmd(&self, c: Cmd) -> Result<(), Error> {
        self.cmds.send(c).await.map_err(|_| Error::Stopped)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Makes a panic anywhere in the process — in a tokio task too, which would otherwise end
/// alone while the rest waits for it forever — end the process: the panic's message, a line
/// saying it is a bug, and exit code 101 (what an uncaught panic in `main` gives). For
/// binaries; call it first thing in `main`.
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!(
            "peerweb: internal error (a bug, please report it with the message above); exiting"
        );
        std::process::exit(101);
    }));
}

/// The server's endpoints, from the address the user gave.
#[derive(Debug, Clone)]
struct Urls {
    ws: String,
    http: String,
    /// The access token, sent with the WebSocket (`?access_token=`) and to `/api/ice`.
    token: Option<String>,
}

impl Urls {
    /// The signaling URL, with the access token when there is one.
    fn ws_url(&self) -> String {
        match &self.token {
            Some(t) => format!("{}?access_token={t}", self.ws),
            None => self.ws.clone(),
        }
    }
}

impl Urls {
    fn parse(server: &str) -> Result<Urls, Error> {
        let bad = || Error::BadUrl(server.to_owned());
        let (scheme, rest) = server.split_once("://").ok_or_else(bad)?;
        let tls = match scheme {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => return Err(bad()),
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            return Err(bad());
        }
        let s = if tls { "s" } else { "" };
        Ok(Urls {
            ws: format!("ws{s}://{host}/ws"),
            http: format!("http{s}://{host}"),
            token: None,
        })
    }
}

/// The certificates trusted for the server's HTTPS and for `turns:`: Mozilla's roots
/// (`webpki-root-certs`), plus those of `--ca`; and the HTTP agent for `/api/ice` that trusts
/// the same.
#[derive(Debug, Clone)]
struct Trust {
    tls: Arc<rustls::ClientConfig>,
    agent: ureq::Agent,
}

impl Trust {
    fn load(ca: Option<&std::path::Path>) -> Result<Self, Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots: Vec<CertificateDer<'static>> =
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(roots.iter().cloned());
        if let Some(path) = ca {
            let bad = |why: &str| Error::Ca {
                path: path.display().to_string(),
                why: why.to_owned(),
            };
            let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect())
                .map_err(|e| bad(&e.to_string()))?;
            let (added, _) = store.add_parsable_certificates(extra.iter().cloned());
            if added == 0 {
                return Err(bad("no usable CA certificate in it"));
            }
            roots.extend(extra);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
        .with_root_certificates(store)
        .with_no_client_auth();
        let certs: Vec<ureq::tls::Certificate<'static>> = roots
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
            .build()
            .into();
        Ok(Self {
            tls: Arc::new(tls),
            agent,
        })
    }
}

/// What a failed TLS connection to the server was refused for, in words; `None` when it was
/// not a certificate problem.
fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as C;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Some(match c {
                C::UnknownIssuer => "its certificate is not signed by a trusted CA (for a private \
                                     CA, pass it with --ca FILE)"
                    .into(),
                C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "its certificate is not valid yet (check this machine's clock)".into()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "its certificate is not valid for this host name".into()
                }
                C::Revoked => "its certificate has been revoked".into(),
                other => format!("its certificate was refused: {other:?}"),
            });
        }
        // An io::Error's source() skips the error it wraps.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_ws(url: &str, trust: &Trust) -> Result<Ws, Error> {
    let connector = tokio_tungstenite::Connector::Rustls(trust.tls.clone());
    let fut = tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(Error::Connect {
            url: url.to_owned(),
            why: certificate_problem(&e).unwrap_or_else(|| e.to_string()),
        }),
        Err(_) => Err(Error::Connect {
            url: url.to_owned(),
            why: "timed out".into(),
        }),
    }
}

/// A UDP socket per usable interface address, with large buffers.
fn bind_host_sockets(opts: &Options) -> Result<Vec<UdpSocket>, Error> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for iface in if_addrs::get_if_addrs()? {
        let ip = iface.ip();
        let named = |list: &[String]| list.contains(&iface.name);
        if (!opts.interfaces.is_empty() && !named(&opts.interfaces)) || named(&opts.deny_interfaces)
        {
            continue;
        }
        let usable = match ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified() && !v4.is_multicast(),
            IpAddr::V6(v6) => {
                !v6.is_unspecified() && !v6.is_multicast() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        };
        if !usable || (ip.is_loopback() && !opts.allow_loopback) {
            continue;
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(Error::NoAddress);
    }
    ips.into_iter()
        .map(|ip| bind_udp(SocketAddr::new(ip, 0)))
        .collect()
}

fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, Error> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into())?)
}

struct Datagram {
    local: SocketAddr,
    from: SocketAddr,
    data: Vec<u8>,
    /// From the TCP/TLS connection of this TURN allocation (its `Turn::id`).
    turn: Option<usize>,
}

/// Reads a socket and hands datagrams to the driver in batches: after each wake-up, whatever
/// else is already queued in the kernel goes along (one channel message, one driver wake-up).
fn spawn_reader(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<Vec<Datagram>>,
) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let mut batch = Vec::new();
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => batch.push(Datagram {
                    local,
                    from,
                    data: buf[..n].to_vec(),
                    turn: None,
                }),
                // ICMP errors (port unreachable) surface here on Linux: keep reading.
                Err(e) => {
                    tracing::trace!("udp recv: {e}");
                    continue;
                }
            }
            while batch.len() < BATCH {
                match sock.try_recv_from(&mut buf) {
                    Ok((n, from)) => batch.push(Datagram {
                        local,
                        from,
                        data: buf[..n].to_vec(),
                        turn: None,
                    }),
                    Err(_) => break,
                }
            }
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    task.abort_handle()
}

struct StunQuery {
    tid: [u8; 12],
    local: SocketAddr,
    server: SocketAddr,
    req: Vec<u8>,
    sends: u32,
    next: Instant,
}

/// How a TURN allocation reaches its server.
enum Link {
    Udp(Arc<UdpSocket>),
    /// TCP or TLS: a task owns the stream; frames to write go through this channel.
    Stream(mpsc::Sender<Vec<u8>>),
}

struct Turn {
    /// Names the allocation in [`Datagram::turn`] (indexes shift as lost ones are replaced).
    id: usize,
    client: TurnClient,
    /// The task reading its UDP socket, stopped when the allocation is dropped (a stream's
    /// task ends by itself when `link` goes).
    reader: Option<tokio::task::AbortHandle>,
    link: Link,
    /// The local address packets from the server arrive at (UDP), for matching.
    local: Option<SocketAddr>,
    relayed: Option<SocketAddr>,
    /// `udp`, `tcp` or `tls`: how we reach the server.
    kind: &'static str,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(r) = &self.reader {
            r.abort();
        }
    }
}

impl Turn {
    async fn send(&mut self, bytes: Vec<u8>) {
        match &self.link {
            Link::Udp(s) => {
                let _ = s.send_to(&bytes, self.client.server()).await;
            }
            Link::Stream(tx) => {
                let _ = tx.try_send(bytes);
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(bytes) = self.client.poll_transmit() {
            self.send(bytes).await;
        }
    }
}

/// How long UDP and TCP allocations get before TURN over TLS is tried too.
const TLS_AFTER: Duration = Duration::from_millis(1500);
/// How long a relayed candidate over TCP waits for one over UDP, which makes it redundant.
const STREAM_RELAY_AFTER: Duration = Duration::from_millis(1000);

struct DeferredTls {
    server: SocketAddr,
    host: String,
    user: String,
    pass: String,
    at: Instant,
}

struct Blocked {
    peer: String,
    label: Option<String>,
    binary: bool,
    data: Vec<u8>,
    reply: oneshot::Sender<Result<(), Error>>,
}

struct Driver {
    client: Client,
    urls: Urls,
    trust: Trust,
    opts: Options,
    socks: HashMap<SocketAddr, Arc<UdpSocket>>,
    net_tx: mpsc::Sender<Vec<Datagram>>,
    ws: Option<Ws>,
    /// A reconnect in progress.
    ws_conn: Option<oneshot::Receiver<Result<Ws, Error>>>,
    backoff: Duration,
    reconnect_at: Option<Instant>,
    stun: Vec<StunQuery>,
    turns: Vec<Turn>,
    /// TURN over TLS, started only if UDP and TCP gave no allocation by the deadline.
    deferred_tls: Option<DeferredTls>,
    /// A relayed candidate from TURN over TCP, held back until the deadline unless TURN over
    /// UDP gives one: str0m gives every relayed candidate the same priority, so offered
    /// together the slower TCP path could win the nomination.
    held_relay: Option<(Candidate, Instant)>,
    next_turn_id: usize,
    /// The STUN server from `/api/ice`, for checking our server-reflexive addresses again.
    stun_server: Option<SocketAddr>,
    /// Our server-reflexive candidate per local socket.
    srflx: HashMap<SocketAddr, Candidate>,
    /// A `/api/ice` request in flight.
    ice_rx: Option<oneshot::Receiver<Result<IceConfig, String>>>,
    /// When our addresses were last checked after a path went down.
    rechecked_at: Option<Instant>,
    /// When to replace lost TURN allocations, and the wait after the next loss.
    realloc_at: Option<Instant>,
    realloc_wait: Duration,
    /// Sends waiting for the send window, in order.
    blocked: VecDeque<Blocked>,
    /// Asked to leave: when to give up waiting for buffered data, and whom to tell.
    leaving: Option<(Instant, oneshot::Sender<()>)>,
    events: mpsc::Sender<Event>,
    tid: u64,
}

/// The ICE servers `GET /api/ice` hands out.
#[derive(Debug, serde::Deserialize)]
struct IceConfig {
    #[serde(rename = "iceServers")]
    ice_servers: Vec<IceServer>,
}

#[derive(Debug, serde::Deserialize)]
struct IceServer {
    urls: Vec<String>,
    username: Option<String>,
    credential: Option<String>,
}

impl Driver {
    async fn run(
        mut self,
        ws: Ws,
        mut cmds: mpsc::Receiver<Cmd>,
        mut net: mpsc::Receiver<Vec<Datagram>>,
    ) {
        self.ws = Some(ws);
        self.client.signaling_connected(now());
        if self.opts.stun || self.opts.turn {
            self.fetch_ice();
        }
        loop {
            if self.flush().await.is_err() {
                return;
            }
            if let Some((until, _)) = &self.leaving
                && (Instant::now() >= *until || self.drained())
            {
                self.leave().await;
                if let Some((_, reply)) = self.leaving.take() {
                    let _ = reply.send(());
                }
                return;
            }
            let mut deadline = self.deadline();
            if self.leaving.is_some() {
                deadline = deadline.min(Instant::now() + Duration::from_millis(10));
            }
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Leave(reply)) => {
                        // Messages already accepted must reach the peers before we go: wait
                        // (bounded) until nothing is waiting or unacknowledged.
                        self.leaving = Some((Instant::now() + LEAVE_DRAIN, reply));
                    }
                    Some(c) => self.on_cmd(c),
                    None => {
                        self.leave().await;
                        return;
                    }
                },
                Some(batch) = net.recv() => {
                    for d in batch {
                        self.on_datagram(d);
                    }
                    for _ in 0..BATCH {
                        match net.try_recv() {
                            Ok(batch) => batch.into_iter().for_each(|d| self.on_datagram(d)),
                            Err(_) => break,
                        }
                    }
                }
                frame = next_frame(&mut self.ws) => self.on_ws(frame),
                conn = wait_conn(&mut self.ws_conn) => self.on_reconnected(conn),
                ice = wait_ice(&mut self.ice_rx) => {
                    self.ice_rx = None;
                    self.on_ice(ice).await;
                }
                _ = tokio::time::sleep_until(deadline) => self.on_timeout(),
            }
        }
    }

    /// Carries out what the client and the TURN client asked for.
    async fn flush(&mut self) -> Result<(), ()> {
        loop {
            let now = now();
            loop {
                match self.client.poll_output(now) {
                    Output::Timeout(_) => break,
                    Output::Frame(f) => {
                        if let Some(ws) = &mut self.ws
                            && ws.send(WsMessage::text(f)).await.is_err()
                        {
                            self.lost_ws();
                        }
                    }
                    Output::Transmit(t) => self.transmit(t).await,
                    Output::Event(e) => {
                        // Writable is the driver's business: the sends waiting on it go on.
                        if let Event::Writable { peer, label } = &e {
                            self.retry_blocked(Some((peer.clone(), label.clone())));
                            continue;
                        }
                        if let Event::PeerLeft { peer } = &e {
                            self.fail_blocked(peer);
                        }
                        if let Event::State {
                            state: PeerState::Disconnected,
                            ..
                        } = &e
                        {
                            self.recheck();
                        }
                        if self.events.send(e).await.is_err() {
                            return Err(());
                        }
                    }
                }
            }
            let mut added = false;
            let mut lost = Vec::new();
            for t in &mut self.turns {
                t.flush().await;
                while let Some(ev) = t.client.poll_event() {
                    match ev {
                        TurnEvent::Allocated { relayed, .. } => {
                            t.relayed = Some(relayed);
                            self.client.set_relay_transport(relayed, t.kind);
                            self.realloc_wait = Duration::ZERO;
                            // Peers reach the relayed address over UDP, whatever carries us
                            // to the server; the candidate's base is the relayed address.
                            let Ok(c) = Candidate::relayed(relayed, relayed, "udp") else {
                                continue;
                            };
                            match t.kind {
                                "udp" => {
                                    self.client.add_local_candidate(now, c);
                                    self.held_relay = None;
                                    added = true;
                                }
                                "tcp" => {
                                    self.held_relay =
                                        Some((c, Instant::now() + STREAM_RELAY_AFTER));
                                }
                                _ => {
                                    self.client.add_local_candidate(now, c);
                                    added = true;
                                }
                            }
                        }
                        TurnEvent::Failed(why) => {
                            let message = match t.relayed.take() {
                                // It worked and is gone: it is replaced.
                                Some(relayed) => {
                                    lost.push(relayed);
                                    format!(
                                        "TURN over {}: allocation lost ({why}); allocating again",
                                        t.kind
                                    )
                                }
                                None => format!("TURN over {}: {why}", t.kind),
                            };
                            let e = Event::Error {
                                code: "turn-failed".into(),
                                message,
                            };
                            let _ = self.events.send(e).await;
                        }
                    }
                }
            }
            for relayed in lost {
                self.lost_relay(relayed);
            }
            // A relayed candidate was added: its trickle goes out on the next round.
            if !added {
                return Ok(());
            }
        }
    }

    async fn transmit(&mut self, t: peerweb_peer::Transmit) {
        if let Some(s) = self.socks.get(&t.source) {
            if let Err(e) = s.send_to(&t.contents, t.destination).await {
                tracing::trace!("udp send to {}: {e}", t.destination);
            }
            return;
        }
        if let Some(turn) = self
            .turns
            .iter_mut()
            .find(|turn| turn.relayed == Some(t.source))
        {
            turn.client.send_to(now(), t.destination, &t.contents);
            turn.flush().await;
        }
    }

    fn deadline(&self) -> Instant {
        let now = now();
        let mut t = Instant::from_std(self.client.next_timeout(now));
        for q in &self.stun {
            t = t.min(q.next);
        }
        for turn in &self.turns {
            if let Some(x) = turn.client.poll_timeout() {
                t = t.min(Instant::from_std(x));
            }
        }
        if let Some(r) = self.reconnect_at {
            t = t.min(r);
        }
        if let Some(d) = &self.deferred_tls {
            t = t.min(d.at);
        }
        if let Some((_, at)) = &self.held_relay {
            t = t.min(*at);
        }
        if let Some(at) = self.realloc_at {
            t = t.min(at);
        }
        t
    }

    /// A peer's path went down: check whether our own addresses changed under us (a NAT
    /// that dropped its mappings gives a new server-reflexive address and strands our TURN
    /// allocations, whose refresh then fails and has them replaced).
    fn recheck(&mut self) {
        let t = Instant::now();
        if self.rechecked_at.is_some_and(|at| t < at + RECHECK_EVERY) {
            return;
        }
        self.rechecked_at = Some(t);
        if let Some(server) = self.stun_server
            && self.stun.is_empty()
        {
            self.start_stun(server);
        }
        for turn in &mut self.turns {
            turn.client.refresh_now(now());
        }
    }

    /// A TURN allocation we offered is gone: no peer may use it any more, and a new one is
    /// made with fresh credentials.
    fn lost_relay(&mut self, relayed: SocketAddr) {
        if let Ok(c) = Candidate::relayed(relayed, relayed, "udp") {
            if self.held_relay.as_ref().is_some_and(|(h, _)| *h == c) {
                self.held_relay = None;
            } else {
                self.client.remove_local_candidate(now(), &c);
            }
        }
        if self.realloc_at.is_none() {
            self.realloc_at = Some(Instant::now() + self.realloc_wait);
            self.realloc_wait = (self.realloc_wait * 2).clamp(REALLOC_BACKOFF.0, REALLOC_BACKOFF.1);
        }
    }

    /// Asks the server for ICE servers (fresh TURN credentials); [`Driver::on_ice`] follows.
    fn fetch_ice(&mut self) {
        let (tx, rx) = oneshot::channel();
        let url = format!("{}/api/ice", self.urls.http);
        let agent = self.trust.agent.clone();
        let bearer = self.urls.token.as_ref().map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || {
            let mut req = agent.get(&url);
            if let Some(b) = bearer {
                req = req.header("Authorization", b);
            }
            let r = req
                .call()
                .and_then(|mut r| r.body_mut().read_json::<IceConfig>());
            let _ =
                tx.send(r.map_err(|e| certificate_problem(&e).unwrap_or_else(|| e.to_string())));
        });
        self.ice_rx = Some(rx);
    }

    /// Offers the held TCP relayed candidate once UDP had its time (or gave up) without one.
    fn maybe_release_relay(&mut self) {
        let Some((_, at)) = &self.held_relay else {
            return;
        };
        let mut udp = self.turns.iter().filter(|t| t.kind == "udp");
        if udp.clone().any(|t| t.relayed.is_some()) {
            self.held_relay = None;
            return;
        }
        let udp_failed = udp.all(|t| t.client.is_failed());
        if Instant::now() >= *at || udp_failed {
            if let Some((c, _)) = self.held_relay.take() {
                self.client.add_local_candidate(now(), c);
            }
        }
    }

    /// Starts TURN over TLS once UDP and TCP have had their chance without an allocation.
    fn maybe_start_tls(&mut self) {
        let Some(d) = &self.deferred_tls else {
            return;
        };
        if self.turns.iter().any(|t| t.relayed.is_some()) {
            self.deferred_tls = None;
            return;
        }
        let all_failed = self.turns.iter().all(|t| t.client.is_failed());
        if Instant::now() >= d.at || all_failed {
            if let Some(d) = self.deferred_tls.take() {
                self.start_turn("tls", d.server, &d.host, &d.user, &d.pass);
            }
        }
    }

    fn on_timeout(&mut self) {
        if self.realloc_at.is_some_and(|at| Instant::now() >= at) && self.ice_rx.is_none() {
            self.realloc_at = None;
            // Failed allocations go (those that never worked are tried again too: the
            // network may have changed) and every transport missing is allocated anew.
            self.turns.retain(|t| !t.client.is_failed());
            self.deferred_tls = None;
            self.fetch_ice();
        }
        self.maybe_start_tls();
        self.maybe_release_relay();
        let t = now();
        self.client.handle_timeout(t);
        for turn in &mut self.turns {
            turn.client.handle_timeout(t);
        }
        let tnow = Instant::now();
        let mut resend = Vec::new();
        self.stun.retain_mut(|q| {
            if tnow < q.next {
                return true;
            }
            if q.sends >= STUN_SENDS {
                return false;
            }
            q.sends += 1;
            q.next = tnow + Duration::from_millis(250 << q.sends);
            resend.push((q.local, q.server, q.req.clone()));
            true
        });
        for (local, server, req) in resend {
            if let Some(s) = self.socks.get(&local) {
                let _ = s.try_send_to(&req, server);
            }
        }
        if self.reconnect_at.is_some_and(|r| tnow >= r) && self.ws_conn.is_none() {
            self.reconnect_at = None;
            let (tx, rx) = oneshot::channel();
            let url = self.urls.ws_url();
            let trust = self.trust.clone();
            tokio::spawn(async move {
                let _ = tx.send(connect_ws(&url, &trust).await);
            });
            self.ws_conn = Some(rx);
        }
    }

    fn on_datagram(&mut self, d: Datagram) {
        let t = now();
        let idx = match d.turn {
            Some(id) => self.turns.iter().position(|x| x.id == id),
            None => self
                .turns
                .iter()
                .position(|x| x.local == Some(d.local) && x.client.server() == d.from),
        };
        if let Some(turn) = idx.and_then(|i| self.turns.get_mut(i)) {
            let relayed = turn.relayed;
            if let (Some(relayed), Some((peer, data))) =
                (relayed, turn.client.handle_input(t, &d.data))
            {
                self.client
                    .handle_receive(t, Protocol::Udp, peer, relayed, data);
            }
            return;
        }
        if let Some(i) = self
            .stun
            .iter()
            .position(|q| q.local == d.local && q.server == d.from)
            && let Ok(m) = Message::parse(&d.data)
            && m.tid == self.stun[i].tid
        {
            let q = self.stun.swap_remove(i);
            if m.class == Class::Success
                && let Some(mapped) = m.xor_address(attr::XOR_MAPPED_ADDRESS)
                && mapped != q.local
                && let Ok(c) = Candidate::server_reflexive(mapped, q.local, "udp")
            {
                // Our public address changed (a NAT that dropped its mappings, a new
                // uplink): the old one is gone.
                if let Some(old) = self.srflx.insert(q.local, c.clone())
                    && old != c
                {
                    self.client.remove_local_candidate(t, &old);
                }
                self.client.add_local_candidate(t, c);
            }
            return;
        }
        self.client
            .handle_receive(t, Protocol::Udp, d.from, d.local, &d.data);
    }

    fn on_ws(&mut self, frame: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>) {
        match frame {
            Some(Ok(WsMessage::Text(text))) => self.client.handle_frame(now(), text.as_str()),
            Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => self.lost_ws(),
            Some(Ok(_)) => {}
        }
    }

    fn lost_ws(&mut self) {
        if self.ws.take().is_some() {
            self.client.signaling_lost(now());
            self.reconnect_at = Some(Instant::now() + self.backoff);
        }
    }

    fn on_reconnected(&mut self, conn: Result<Ws, Error>) {
        self.ws_conn = None;
        match conn {
            Ok(ws) => {
                self.ws = Some(ws);
                self.backoff = BACKOFF_MIN;
                self.client.signaling_connected(now());
            }
            Err(e) => {
                tracing::debug!("signaling reconnect: {e}");
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.reconnect_at = Some(Instant::now() + self.backoff);
            }
        }
    }

    async fn on_ice(&mut self, ice: Result<Result<IceConfig, String>, oneshot::error::RecvError>) {
        let cfg = match ice {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let _ = self
                    .events
                    .send(Event::Error {
                        code: "ice-servers".into(),
                        message: format!("cannot fetch ICE servers: {e}; host candidates only"),
                    })
                    .await;
                return;
            }
            Err(_) => return,
        };
        for server in &cfg.ice_servers {
            for url in &server.urls {
                if self.opts.stun && url.starts_with("stun:") && self.stun.is_empty() {
                    if let Some(addr) = resolve(url).await {
                        self.stun_server = Some(addr);
                        self.start_stun(addr);
                    }
                    continue;
                }
                let (Some(u), Some(p)) = (&server.username, &server.credential) else {
                    continue;
                };
                // Like a browser: an allocation on every transport offered, so a network
                // that blocks UDP (or all but TLS) still gets a relayed candidate.
                let kind = if url.starts_with("turns:") {
                    "tls"
                } else if url.starts_with("turn:") && url.contains("transport=tcp") {
                    "tcp"
                } else if url.starts_with("turn:") {
                    "udp"
                } else {
                    continue;
                };
                if !self.opts.turn
                    || self.turns.iter().any(|t| t.kind == kind)
                    || (kind == "tls" && self.deferred_tls.is_some())
                {
                    continue;
                }
                if let Some(addr) = resolve(url).await {
                    let host = url_host(url).unwrap_or_default().to_owned();
                    if kind == "tls" {
                        // The last resort (it costs a TLS handshake and an allocation):
                        // only when UDP and TCP did not give one in time.
                        self.deferred_tls = Some(DeferredTls {
                            server: addr,
                            host,
                            user: u.clone(),
                            pass: p.clone(),
                            at: Instant::now() + TLS_AFTER,
                        });
                    } else {
                        self.start_turn(kind, addr, &host, u, p);
                    }
                }
            }
        }
    }

    fn start_stun(&mut self, server: SocketAddr) {
        let locals: Vec<SocketAddr> = self
            .socks
            .keys()
            .filter(|a| !a.ip().is_loopback() && a.is_ipv4() == server.is_ipv4())
            .copied()
            .collect();
        for local in locals {
            self.tid += 1;
            let mut tid = [0u8; 12];
            tid[..8].copy_from_slice(&self.tid.to_be_bytes());
            tid[8..].copy_from_slice(b"pwsb");
            let req = Builder::new(Class::Request, method::BINDING, &tid).fingerprint();
            if let Some(s) = self.socks.get(&local) {
                let _ = s.try_send_to(&req, server);
            }
            self.stun.push(StunQuery {
                tid,
                local,
                server,
                req,
                sends: 1,
                next: Instant::now() + Duration::from_millis(250),
            });
        }
    }

    fn start_turn(
        &mut self,
        kind: &'static str,
        server: SocketAddr,
        host: &str,
        user: &str,
        pass: &str,
    ) {
        let id = self.next_turn_id;
        self.next_turn_id += 1;
        let seed = (id as u64) << 48 | u64::from(std::process::id());
        let (link, local, reader, transport) = if kind == "udp" {
            let bind = if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let Ok(sock) = bind_udp(bind) else {
                return;
            };
            let sock = Arc::new(sock);
            let Ok(local) = sock.local_addr() else {
                return;
            };
            let reader = spawn_reader(sock.clone(), local, self.net_tx.clone());
            (Link::Udp(sock), Some(local), Some(reader), Transport::Udp)
        } else {
            let tls = (kind == "tls").then(|| (self.trust.tls.clone(), host.to_owned()));
            let tx = spawn_stream(id, server, tls, self.net_tx.clone());
            (Link::Stream(tx), None, None, Transport::Stream)
        };
        let client = TurnClient::new(now(), server, transport, user, pass, seed);
        self.turns.push(Turn {
            id,
            client,
            reader,
            link,
            local,
            relayed: None,
            kind,
        });
    }

    fn on_cmd(&mut self, c: Cmd) {
        let t = now();
        match c {
            Cmd::Send {
                peer,
                label,
                binary,
                data,
                reply,
            } => {
                // Keep order: behind anything already waiting for the same channel.
                let waiting = self
                    .blocked
                    .iter()
                    .any(|b| b.peer == peer && b.label == label);
                if waiting {
                    self.blocked.push_back(Blocked {
                        peer,
                        label,
                        binary,
                        data,
                        reply,
                    });
                    return;
                }
                match self.client.send(t, &peer, label.as_deref(), binary, &data) {
                    Ok(true) => {
                        let _ = reply.send(Ok(()));
                    }
                    Ok(false) => self.blocked.push_back(Blocked {
                        peer,
                        label,
                        binary,
                        data,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Cmd::Open {
                peer,
                label,
                opts,
                reply,
            } => {
                let r = self.client.open_channel(t, &peer, &label, opts);
                let _ = reply.send(r.map_err(Into::into));
            }
            Cmd::Status(reply) => {
                let ids: Vec<String> = self.client.peers().map(str::to_owned).collect();
                let list = ids
                    .into_iter()
                    .map(|id| PeerStatus {
                        state: self.client.peer_state(&id).unwrap_or(PeerState::Closed),
                        open: self.client.is_open(&id),
                        path: self.client.path(&id),
                        id,
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Cmd::Fingerprints(peer, reply) => {
                let _ = reply.send(self.client.fingerprints(&peer));
            }
            Cmd::Buffered(peer, label, reply) => {
                let _ = reply.send(self.client.buffered(&peer, label.as_deref()));
            }
            Cmd::Media {
                video,
                rtp_time,
                data,
            } => {
                self.client.write_media(t, video, rtp_time, &data);
            }
            Cmd::Sending(peer, reply) => {
                let _ = reply.send(self.client.sending(&peer));
            }
            Cmd::Leave(_) => {}
        }
    }

    /// Retries waiting sends (of one channel, or all) in order until one does not fit.
    fn retry_blocked(&mut self, only: Option<(String, String)>) {
        let t = now();
        let mut keep = VecDeque::new();
        let mut stuck: Vec<(String, Option<String>)> = Vec::new();
        while let Some(b) = self.blocked.pop_front() {
            let key = (b.peer.clone(), b.label.clone());
            let matches = only.as_ref().is_none_or(|(p, l)| {
                *p == b.peer && b.label.as_deref().unwrap_or(peerweb_peer::DEFAULT_LABEL) == l
            });
            if !matches || stuck.contains(&key) {
                keep.push_back(b);
                continue;
            }
            match self
                .client
                .send(t, &b.peer, b.label.as_deref(), b.binary, &b.data)
            {
                Ok(true) => {
                    let _ = b.reply.send(Ok(()));
                }
                Ok(false) => {
                    stuck.push(key);
                    keep.push_back(b);
                }
                Err(e) => {
                    let _ = b.reply.send(Err(e.into()));
                }
            }
        }
        self.blocked = keep;
    }

    /// Nothing waits for the window and nothing sent is unacknowledged, to any peer.
    fn drained(&mut self) -> bool {
        let ids: Vec<String> = self.client.peers().map(str::to_owned).collect();
        self.blocked.is_empty()
            && ids
                .iter()
                .all(|id| !self.client.is_open(id) || self.client.buffered(id, None) == 0)
    }

    fn fail_blocked(&mut self, peer: &str) {
        let (gone, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.blocked)
            .into_iter()
            .partition(|b| b.peer == peer);
        self.blocked = keep;
        for b in gone {
            let _ = b
                .reply
                .send(Err(Error::Peer(peerweb_peer::Error::PeerGone)));
        }
    }

    async fn leave(&mut self) {
        self.client.leave(now());
        for t in &mut self.turns {
            t.client.close(now());
        }
        let _ = self.flush().await;
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }
}

async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn wait_ice(
    rx: &mut Option<oneshot::Receiver<Result<IceConfig, String>>>,
) -> Result<Result<IceConfig, String>, oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

async fn wait_conn(c: &mut Option<oneshot::Receiver<Result<Ws, Error>>>) -> Result<Ws, Error> {
    match c {
        Some(rx) => rx.await.unwrap_or(Err(Error::Stopped)),
        None => std::future::pending().await,
    }
}

/// The host of a `turn:`/`turns:` URL (the TLS server name).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once(':')?.1.split('?').next()?;
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(rest.rsplit_once(':').map_or(rest, |(h, _)| h))
}

/// Largest STUN/ChannelData frame accepted from a TURN server over a stream.
const MAX_STREAM_FRAME: usize = 4 + 65_535 + 3;

/// A task owning one TCP (or TLS) connection to a TURN server: frames from `rx` are written,
/// frames read are split with the STUN stream framing and handed to the driver.
fn spawn_stream(
    id: usize,
    server: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    net: mpsc::Sender<Vec<Datagram>>,
) -> mpsc::Sender<Vec<u8>> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        idx: usize,
        server: SocketAddr,
        rx: &mut mpsc::Receiver<Vec<u8>>,
        net: &mpsc::Sender<Vec<Datagram>>,
    ) -> std::io::Result<()> {
        let mut acc: Vec<u8> = Vec::with_capacity(8192);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(bytes) => s.write_all(&bytes).await?,
                    None => return Ok(()),
                },
                n = s.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    acc.extend_from_slice(&buf[..n]);
                    while let Some(len) = peerweb_turn::stun::stream_frame_len(&acc) {
                        if len > MAX_STREAM_FRAME {
                            return Err(std::io::Error::other("oversize frame from TURN server"));
                        }
                        if acc.len() < len {
                            break;
                        }
                        let data: Vec<u8> = acc.drain(..len).collect();
                        let d = Datagram { local: server, from: server, data, turn: Some(idx) };
                        if net.send(vec![d]).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    tokio::spawn(async move {
        let tcp = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(t)) => t,
            _ => return,
        };
        let _ = tcp.set_nodelay(true);
        let r = match tls {
            None => pump(tcp, id, server, &mut rx, &net).await,
            Some((cfg, host)) => {
                let Ok(name) = rustls::pki_types::ServerName::try_from(host) else {
                    return;
                };
                match tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                {
                    Ok(s) => pump(s, id, server, &mut rx, &net).await,
                    Err(e) => {
                        tracing::debug!("TURN TLS handshake with {server}: {e}");
                        return;
                    }
                }
            }
        };
        if let Err(e) = r {
            tracing::debug!("TURN stream to {server}: {e}");
        }
    });
    tx
}

/// `stun:host:port` or `turn:host:port?transport=udp` to a socket address.
async fn resolve(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once(':')?.1;
    let hostport = rest.split('?').next()?;
    tokio::net::lookup_host(hostport).await.ok()?.next()
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_become_endpoints() {
        let u = Urls::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.ws.as_str(), u.http.as_str()),
            ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080")
        );
        let u = Urls::parse("ws://example.org/some/page?x#y").unwrap();
        assert_eq!(
            (u.ws.as_str(), u.http.as_str()),
            ("ws://example.org/ws", "http://example.org")
        );
        for tls in ["https://example.org:8443/x", "wss://example.org:8443"] {
            let u = Urls::parse(tls).unwrap();
            assert_eq!(
                (u.ws.as_str(), u.http.as_str()),
                ("wss://example.org:8443/ws", "https://example.org:8443")
            );
        }
        for bad in ["example.org", "ftp://x", "http://", "http://user@host"] {
            assert!(matches!(Urls::parse(bad), Err(Error::BadUrl(_))), "{bad}");
        }
    }
}
